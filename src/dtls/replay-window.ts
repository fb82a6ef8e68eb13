/**
 * 64-record anti-replay window (RFC 6347 §4.1.2.6). `check` before authenticating a record,
 * `accept` only after it authenticated: an unauthenticated record must never move the window
 * (OpenSSL CVE-2016-2181). Sequence numbers are 48-bit, exact in a JS number.
 * The bitmap is two 32-bit words: bit i set = sequence number (max - i) was received.
 */
export class ReplayWindow {
  private max = -1;
  private lo = 0;
  private hi = 0;

  /** True when `seq` is new: to the right of the window, or inside it and not yet seen. */
  check(seq: number): boolean {
    if (seq > this.max) return true;
    const diff = this.max - seq;
    if (diff >= 64) return false;
    const bit = diff < 32 ? (this.lo >>> diff) & 1 : (this.hi >>> (diff - 32)) & 1;
    return bit === 0;
  }

  /** Marks `seq` as received; call only after the record authenticated. */
  accept(seq: number): void {
    if (seq > this.max) {
      const shift = this.max < 0 ? 64 : seq - this.max;
      if (shift >= 64) {
        this.lo = 0;
        this.hi = 0;
      } else if (shift >= 32) {
        this.hi = (this.lo << (shift - 32)) >>> 0;
        this.lo = 0;
      } else {
        this.hi = ((this.hi << shift) | (this.lo >>> (32 - shift))) >>> 0;
        this.lo = (this.lo << shift) >>> 0;
      }
      this.lo = (this.lo | 1) >>> 0;
      this.max = seq;
      return;
    }
    const diff = this.max - seq;
    if (diff >= 64) return;
    if (diff < 32) this.lo = (this.lo | (1 << diff)) >>> 0;
    else this.hi = (this.hi | (1 << (diff - 32))) >>> 0;
  }

  /**
   * Refuses everything below `floor` from now on, as if all of it had been received (an
   * adopted shared association: records below its fence may have been accepted elsewhere).
   */
  refuseBelow(floor: number): void {
    if (floor - 1 <= this.max) return;
    this.max = floor - 1;
    this.lo = 0xffffffff;
    this.hi = 0xffffffff;
  }

  /** Highest sequence number accepted so far, -1 if none. */
  get highest(): number {
    return this.max;
  }
}
