#!/usr/bin/env bash
# Unpacks mbedTLS 3.6 (Debian 13 "trixie" packages) into test/.cache/mbedtls36 for the mbedTLS
# interop tests (the device client in test/fixtures/mbedtls-device/ built against 3.6, which
# has RFC 9146 Connection ID). The system's packages are not touched: apt runs with a private
# source list, lists and cache under test/.cache/mbedtls36-apt, `apt-get download` fetches the
# .deb files and `dpkg -x` unpacks them. The mirror is the machine's own: its URI is read at
# run time from /etc/apt/sources.list.d/debian.sources (deb822) or /etc/apt/sources.list, and
# only the suite is changed. Idempotent: does nothing when the folder is already complete.
#
# Usage: scripts/fetch-mbedtls36.sh   (test/helpers/mbedtls.ts expects this destination)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/test/.cache/mbedtls36"
state="$dest-apt"
suite=trixie
# mbedTLS 3.6 in trixie: headers + .so links, and the three runtime libraries they link to.
pkgs=(libmbedtls-dev libmbedtls21 libmbedx509-7 libmbedcrypto16)
stamp="$dest/.unpacked"

if [ -f "$stamp" ] && [ -f "$dest/usr/include/mbedtls/build_info.h" ]; then
  echo "fetch-mbedtls36: already unpacked in $dest ($(tr '\n' ' ' <"$stamp"))"
  exit 0
fi

die() {
  echo "fetch-mbedtls36: $*" >&2
  exit 1
}
command -v apt-get >/dev/null || die "apt-get not found (a Debian machine is needed)"
command -v dpkg >/dev/null || die "dpkg not found"

codename="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"

# Prints "URI<TAB>signed-by" of the machine's main Debian archive: the entry whose suite is the
# release codename itself (not -updates, -security), else the first deb entry.
machine_archive() {
  local f=/etc/apt/sources.list.d/debian.sources
  if [ -f "$f" ]; then
    awk -v want="$codename" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && uri != "") {
          n = split(suites, s, " ")
          for (i = 1; i <= n; i++) if (s[i] == want && best == "") best = uri "\t" signed
          if (first == "") first = uri "\t" signed
        }
        types = ""; uri = ""; suites = ""; signed = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      tolower($1) == "types:"     { $1 = ""; types = $0 }
      tolower($1) == "uris:"      { uri = $2 }
      tolower($1) == "suites:"    { $1 = ""; suites = $0 }
      tolower($1) == "signed-by:" { signed = $2 }
      END { flush(); if (best != "") print best; else if (first != "") print first }
    ' "$f"
    return
  fi
  f=/etc/apt/sources.list
  [ -f "$f" ] || return 0
  # deb [opt=val ...] URI suite component...
  awk -v want="$codename" '
    $1 != "deb" { next }
    {
      signed = ""; i = 2
      if ($2 ~ /^\[/) {
        for (; i <= NF; i++) {
          if ($i ~ /^\[?signed-by=/) { signed = $i; sub(/^\[?signed-by=/, "", signed); sub(/\]$/, "", signed) }
          if ($i ~ /\]$/) { i++; break }
        }
      }
      line = $i "\t" signed
      if ($(i + 1) == want && best == "") best = line
      if (first == "") first = line
    }
    END { if (best != "") print best; else if (first != "") print first }
  ' "$f"
}

archive="$(machine_archive)"
uri="${archive%%$'\t'*}"
signed="${archive#*$'\t'}"
[ -n "$uri" ] || die "no deb source found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"

start=$(date +%s)
mkdir -p "$state/etc/sources.list.d" "$state/lists/partial" "$state/cache/archives/partial" \
  "$state/debs"
opt=""
[ -n "$signed" ] && opt="[signed-by=$signed] "
echo "deb ${opt}${uri} ${suite} main" >"$state/etc/sources.list"
apt_opts=(
  -q
  -o "Dir::Etc::SourceList=$state/etc/sources.list"
  -o "Dir::Etc::SourceParts=$state/etc/sources.list.d"
  -o "Dir::State::Lists=$state/lists"
  -o "Dir::Cache=$state/cache"
  -o "Dir::Cache::pkgcache="
  -o "Dir::Cache::srcpkgcache="
  # the unprivileged download user need not reach a folder under the repository
  -o "APT::Sandbox::User=root"
)
echo "fetch-mbedtls36: apt-get update ($suite from the machine's mirror) into $state"
apt-get "${apt_opts[@]}" update >"$state/update.log" 2>&1 || {
  cat "$state/update.log" >&2
  die "apt-get update of $suite failed"
}
rm -f "$state/debs/"*.deb
(cd "$state/debs" && apt-get "${apt_opts[@]}" download "${pkgs[@]}") >"$state/download.log" 2>&1 || {
  cat "$state/download.log" >&2
  die "apt-get download ${pkgs[*]} failed"
}

rm -rf "$dest"
mkdir -p "$dest"
versions=()
for deb in "$state/debs/"*.deb; do
  dpkg -x "$deb" "$dest"
  versions+=("$(dpkg-deb -f "$deb" Package)=$(dpkg-deb -f "$deb" Version)")
done
[ -f "$dest/usr/include/mbedtls/build_info.h" ] || die "unpacked, but no mbedTLS 3 headers in $dest"
printf '%s\n' "${versions[@]}" >"$stamp"
echo "fetch-mbedtls36: unpacked ${versions[*]} into $dest in $(($(date +%s) - start)) s"
