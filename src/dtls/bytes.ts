/**
 * Big-endian fields by byte. `Buffer#readUInt16BE`, `readUIntBE`, `writeUInt16BE` and
 * `writeUIntBE` check the value's range and the offset on every call, through Node's
 * stack-hiding wrapper (rest arguments, `Reflect.apply`): dozens of calls per handshake and
 * several per record. Every caller here has checked the bounds (or sized the buffer) first,
 * and writes values in range by construction (bench/history/records.md, "The record path, third
 * pass", and bench/history/handshake.md, "The handshake against its floor").
 */

export function put16(out: Buffer, at: number, v: number): void {
  out[at] = v >>> 8;
  out[at + 1] = v & 0xff;
}

export function put24(out: Buffer, at: number, v: number): void {
  out[at] = v >>> 16;
  out[at + 1] = (v >>> 8) & 0xff;
  out[at + 2] = v & 0xff;
}

export function put48(out: Buffer, at: number, v: number): void {
  const hi = (v / 0x100000000) >>> 0;
  const lo = v >>> 0;
  out[at] = hi >>> 8;
  out[at + 1] = hi & 0xff;
  out[at + 2] = lo >>> 24;
  out[at + 3] = (lo >>> 16) & 0xff;
  out[at + 4] = (lo >>> 8) & 0xff;
  out[at + 5] = lo & 0xff;
}

/** The 16-bit field at `at`; the caller has checked that two bytes are there. */
export function get16(b: Buffer, at: number): number {
  return ((b[at] ?? 0) << 8) | (b[at + 1] ?? 0);
}

/** The 24-bit field at `at`; the caller has checked that three bytes are there. */
export function get24(b: Buffer, at: number): number {
  return ((b[at] ?? 0) << 16) | ((b[at + 1] ?? 0) << 8) | (b[at + 2] ?? 0);
}
