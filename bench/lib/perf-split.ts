/**
 * Splits `perf script -F ip,sym,dso` output of a `perf record -g` (one block of frames per
 * sample, leaf first) into categories for bench/records-perf.ts. A sample in the kernel goes to
 * the system call it is under (receive, send, epoll, other; none: interrupt, softirq or
 * scheduler). A user-space sample goes to the first frame, walking from the leaf towards the
 * root, that names a category: OpenSSL, node:crypto's C++, the GC, N-API, JavaScript by the file
 * its function is in (JIT frames named through --perf-basic-prof), libcoap, UDP in libuv and
 * Node's UDPWrap, the event loop. So malloc, memcpy and V8 builtins count for whoever called
 * them, as far as the stack could be walked (frames of code built without frame pointers may
 * cut it short: such samples fall to "unwalked").
 */

export interface PerfSplit {
  readonly samples: number;
  /** Category → share of the samples (0–1). */
  readonly shares: Record<string, number>;
  /** Samples whose stack holds UDPWrap::OnAlloc (the 64 KiB receive buffer), as a share. */
  readonly onAllocShare: number;
  /** The most frequent leaf symbols, share of samples. */
  readonly topLeaves: Record<string, number>;
}

interface Frame {
  readonly sym: string;
  readonly dso: string;
}

const KERNEL = /kernel\.kallsyms|\[kernel|vmlinux/;
const SYSCALL = /^(?:__x64_sys_|__do_sys_|__se_sys_|__sys_)(\w+)/;
const OPENSSL =
  /^(?:aesni_|_?aes_|AES_|EVP_|evp_|ossl_|OSSL_|CRYPTO_|OPENSSL_|ERR_|sha256_|SHA256|HMAC|hmac_|ccm_|CRYPTO|ctr_|cipher_|md_|RAND_|rand_|drbg_|OBJ_|BN_|bn_|gcm_|ERR|tls1_|ssl3_|SSL_|ssl_|dtls1_|DTLS|BIO_|ASN1_|PROV|provider_|aes_|blake|int_ctx)/;

function category(frame: Frame): string | undefined {
  const { sym, dso } = frame;
  if (/libcrypto|libssl/.test(dso) || OPENSSL.test(sym)) return 'OpenSSL';
  if (sym.startsWith('node::crypto::')) return "node:crypto's C++";
  if (
    /^v8::internal::(?:Heap|Scavenger|ScavengeJob|MarkCompact|MinorMarkCompact|MarkingVisitor|MainMarkingVisitor|ConcurrentMarking|IncrementalMarking|Sweeper|Evacuat|.*GC|.*Marking|LocalHeap|MemoryAllocator|MemoryChunk|Page|PagedSpace|NewSpace|SemiSpace)/.test(
      sym,
    )
  ) {
    return 'GC';
  }
  if (/edge_native\.node/.test(dso) || sym.startsWith('napi_') || sym.includes('napi_env'))
    return 'N-API and the addon';
  if (
    /perf-\d+\.map|JIT|\[anon|memfd/.test(dso) ||
    /^(?:JS|LazyCompile|Function|Script):/.test(sym)
  ) {
    if (sym.startsWith('Builtin:') || sym.startsWith('Builtins_')) return undefined;
    if (
      /node:(?:internal\/)?dgram|node:dns|node:internal\/dns|node:net\b|node:internal\/net/.test(
        sym,
      )
    )
      return 'JavaScript: node:dgram';
    if (/record-cipher/.test(sym)) return 'JavaScript: record crypto (Ccm8)';
    if (/node:(?:internal\/)?crypto/.test(sym)) return 'JavaScript: node:crypto';
    if (/node:(?:internal\/)?buffer/.test(sym)) return 'JavaScript: Buffer';
    if (/node:/.test(sym)) return 'JavaScript: other node internals';
    if (/file:\/\//.test(sym)) return 'JavaScript: the server';
    return undefined;
  }
  if (/libcoap/.test(dso)) return 'libcoap';
  if (
    /^(?:node::UDPWrap|uv__udp|uv_udp|node::SendWrap|node::ReqWrap|node::HandleWrap|node::AsyncWrap|node::LibuvStreamWrap|node::Environment::allocate_managed)/.test(
      sym,
    )
  )
    return 'UDP: libuv and UDPWrap';
  if (/^(?:uv__io_poll|uv_run|uv__run|uv__epoll)/.test(sym)) return 'event loop (libuv)';
  return undefined;
}

function kernelCategory(frames: readonly Frame[]): string {
  for (const f of frames) {
    if (!KERNEL.test(f.dso)) continue;
    const m = SYSCALL.exec(f.sym);
    if (m === null) continue;
    const name = m[1]!;
    if (/^recv/.test(name)) return 'kernel: receive (recvmsg, recvmmsg)';
    if (/^send/.test(name)) return 'kernel: send (sendmsg, sendmmsg; loopback delivery)';
    if (/epoll/.test(name)) return 'kernel: epoll';
    return `kernel: ${name}`;
  }
  return 'kernel: no system call (interrupts, softirq, scheduler)';
}

const FRAME = /^\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$/;

export function splitPerfScript(text: string): PerfSplit {
  const counts = new Map<string, number>();
  const leaves = new Map<string, number>();
  let samples = 0;
  let onAlloc = 0;
  const flush = (frames: Frame[]): void => {
    if (frames.length === 0) return;
    samples++;
    const leaf = frames[0]!;
    const leafName = `${leaf.sym.replace(/\+0x[0-9a-f]+$/, '')} (${leaf.dso.replace(/.*\//, '')})`;
    leaves.set(leafName, (leaves.get(leafName) ?? 0) + 1);
    if (frames.some((f) => f.sym.includes('UDPWrap::OnAlloc'))) onAlloc++;
    let cat: string | undefined;
    if (KERNEL.test(leaf.dso)) cat = kernelCategory(frames);
    else {
      for (const f of frames) {
        cat = category(f);
        if (cat !== undefined) break;
      }
      if (cat === undefined) {
        cat = /libc\.so|libc-/.test(leaf.dso)
          ? 'unwalked: libc (malloc, memcpy, …)'
          : /^(?:Builtins_|v8::|Builtin:)/.test(leaf.sym)
            ? 'unwalked: V8'
            : 'unwalked: other';
      }
    }
    counts.set(cat, (counts.get(cat) ?? 0) + 1);
  };
  let frames: Frame[] = [];
  for (const line of text.split('\n')) {
    const m = FRAME.exec(line);
    if (m === null) {
      if (line.trim() === '') {
        flush(frames);
        frames = [];
      }
      continue;
    }
    frames.push({ sym: m[1]!.replace(/\+0x[0-9a-f]+$/, ''), dso: m[2]! });
  }
  flush(frames);
  const share = (n: number): number => Math.round((n / Math.max(1, samples)) * 10_000) / 10_000;
  const sorted = [...counts].sort((a, b) => b[1] - a[1]);
  const top = [...leaves].sort((a, b) => b[1] - a[1]).slice(0, 25);
  return {
    samples,
    shares: Object.fromEntries(sorted.map(([k, n]) => [k, share(n)])),
    onAllocShare: share(onAlloc),
    topLeaves: Object.fromEntries(top.map(([k, n]) => [k, share(n)])),
  };
}
