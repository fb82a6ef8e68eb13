/**
 * Bounds-checked reader for handshake structures. Every read checks the remaining length
 * first and throws a `decode_error` DtlsError instead of reading past the end; views are
 * returned with `subarray` (no copies).
 */
import { get16, get24 } from './bytes.js';
import { decodeError } from './errors.js';

export class Reader {
  private off: number;
  private readonly end: number;

  constructor(
    private readonly buf: Buffer,
    private readonly what: string,
    start = 0,
    end = buf.length,
  ) {
    this.off = start;
    this.end = end;
  }

  get remaining(): number {
    return this.end - this.off;
  }

  private need(n: number): void {
    if (this.end - this.off < n) throw decodeError(this.what);
  }

  u8(): number {
    this.need(1);
    return this.buf[this.off++] ?? 0;
  }

  u16(): number {
    this.need(2);
    const v = get16(this.buf, this.off);
    this.off += 2;
    return v;
  }

  u24(): number {
    this.need(3);
    const v = get24(this.buf, this.off);
    this.off += 3;
    return v;
  }

  bytes(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }

  /** opaque x<min..max> with a one-byte length. */
  vec8(min = 0, max = 255): Buffer {
    const n = this.u8();
    if (n < min || n > max) throw decodeError(this.what);
    return this.bytes(n);
  }

  /** opaque x<min..max> with a two-byte length. */
  vec16(min = 0, max = 65535): Buffer {
    const n = this.u16();
    if (n < min || n > max) throw decodeError(this.what);
    return this.bytes(n);
  }

  /**
   * opaque x<min..max> with a two-byte length, skipped: its start offset in the buffer (its
   * length is the 2 bytes before), for a caller that reads it in place instead of a view.
   */
  skip16(min = 0, max = 65535): number {
    const n = this.u16();
    if (n < min || n > max) throw decodeError(this.what);
    this.need(n);
    const start = this.off;
    this.off += n;
    return start;
  }

  /** Structures must be consumed exactly: trailing bytes are a decode error. */
  done(): void {
    if (this.off !== this.end) throw decodeError(this.what);
  }
}
