/**
 * Admission of half-open handshakes (after the cookie, before the Finished) by source: at most
 * `perAddress` for one address and `perPrefix` for one network (/24 for IPv4, /64 for IPv6),
 * so a single host or subnet with many source ports cannot take the whole handshake table.
 * Counts only: what a handshake holds lives in the handshake itself.
 */

export interface AdmissionLimits {
  readonly perAddress: number;
  readonly perPrefix: number;
}

export type AdmissionRefusal = 'address-limit' | 'prefix-limit';

export class HalfOpenAdmission {
  private readonly byAddress = new Map<string, number>();
  private readonly byPrefix = new Map<string, number>();
  /** The last address asked about and its prefix: a handshake asks, adds, then removes it. */
  private lastAddress = '';
  private lastPrefix = '';

  constructor(private readonly limits: AdmissionLimits) {}

  /** Why a new handshake from `address` may not start now, or undefined when it may. */
  refusal(address: string): AdmissionRefusal | undefined {
    if ((this.byAddress.get(address) ?? 0) >= this.limits.perAddress) return 'address-limit';
    if ((this.byPrefix.get(this.prefixOf(address)) ?? 0) >= this.limits.perPrefix)
      return 'prefix-limit';
    return undefined;
  }

  add(address: string): void {
    bump(this.byAddress, address, 1);
    bump(this.byPrefix, this.prefixOf(address), 1);
  }

  remove(address: string): void {
    bump(this.byAddress, address, -1);
    bump(this.byPrefix, this.prefixOf(address), -1);
  }

  private prefixOf(address: string): string {
    if (address !== this.lastAddress) {
      this.lastPrefix = networkPrefix(address);
      this.lastAddress = address;
    }
    return this.lastPrefix;
  }

  /** Distinct addresses with a half-open handshake (for tests and diagnostics). */
  get addresses(): number {
    return this.byAddress.size;
  }
}

function bump(m: Map<string, number>, key: string, by: number): void {
  const n = (m.get(key) ?? 0) + by;
  if (n > 0) m.set(key, n);
  else m.delete(key);
}

/**
 * The /24 of an IPv4 address (also IPv4-mapped IPv6) or the /64 of an IPv6 address, as text.
 * Input is what the socket reports; anything unparsable is its own prefix.
 */
function networkPrefix(address: string): string {
  const v4 = address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
  if (!v4.includes(':')) {
    const dot = v4.lastIndexOf('.');
    return dot < 0 ? v4 : `${v4.slice(0, dot)}.0/24`;
  }
  const zone = address.indexOf('%');
  const a = zone < 0 ? address : address.slice(0, zone);
  const gap = a.indexOf('::');
  let groups: string[];
  if (gap < 0) groups = a.split(':');
  else {
    const head = gap === 0 ? [] : a.slice(0, gap).split(':');
    const tail = gap + 2 >= a.length ? [] : a.slice(gap + 2).split(':');
    groups = [
      ...head,
      ...Array<string>(Math.max(0, 8 - head.length - tail.length)).fill('0'),
      ...tail,
    ];
  }
  const first = groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16));
  return `${first.join(':')}::/64`;
}
