/**
 * ustar headers for the layer writer, byte for byte what tar-stream's pack writes for the same
 * entry (test/layer-gzip.test.ts checks it against tar-stream): a name that does not fit
 * ustar's name/prefix split, is not ASCII or has a long link target gets a PAX header first.
 * Written by hand because the writer puts headers straight into its chunk buffers: tar-stream's
 * per-entry stream machinery cost more than the deflate of small files.
 */

import { BLOCK, CHECKSUM, DEVMAJOR, DEVMINOR, GID, LINKNAME, LINKNAME_LENGTH, MAGIC, MODE, MTIME, NAME, NAME_LENGTH, PREFIX, PREFIX_LENGTH, SIZE, TYPEFLAG, UID } from '../util/ustar.js';

export type TarEntryType = 'file' | 'directory' | 'symlink';

const TYPEFLAGS = { file: 0x30, directory: 0x35, symlink: 0x32, pax: 0x78 } as const;
const USTAR_MAGIC = Buffer.from('ustar\x0000', 'latin1');
const SPACE = 0x20;
const ZERO = 0x30;

/**
 * Write `n` at `off` as `digits` octal digits and a space, all 7s when it does not fit
 * (tar-stream's rule); returns the sum of the bytes written (for the checksum).
 */
function putOctal(buf: Buffer, off: number, n: number, digits: number): number {
  if (!Number.isInteger(n) || n < 0) {
    // Not a count (tar-stream writes whatever toString(8) gives; kept byte for byte).
    const s = n.toString(8);
    return putAscii(buf, off, s.length > digits ? `${'7'.repeat(digits)} ` : `${s.padStart(digits, '0')} `);
  }
  let sum = SPACE;
  buf[off + digits] = SPACE;
  if (n >= 8 ** digits) {
    buf.fill(ZERO + 7, off, off + digits);
    return sum + digits * (ZERO + 7);
  }
  for (let i = off + digits - 1; i >= off; i--) {
    const d = ZERO + (n % 8);
    buf[i] = d;
    sum += d;
    n = Math.floor(n / 8);
  }
  return sum;
}

/** Write a string already known to be ASCII (or Latin-1) byte by byte; returns the bytes' sum. */
function putAscii(buf: Buffer, off: number, s: string): number {
  let sum = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    buf[off + i] = c;
    sum += c;
  }
  return sum;
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

function sumOf(buf: Buffer, from: number, to: number): number {
  let sum = 0;
  for (let i = from; i < to; i++) sum += buf[i]!;
  return sum;
}

/**
 * The headers of one layer's entries, which share owner and mtime: those fields, the magic and the
 * device numbers are laid out once in a template with their checksum share, so an entry costs a
 * 512-byte copy and its own fields (a build writes one header per file: thousands).
 */
export class TarHeaderEncoder {
  private readonly template = Buffer.alloc(BLOCK);
  /** The template's bytes outside the per-entry fields, plus the checksum field counted as spaces. */
  private readonly templateSum: number;
  /** Where a ustar block is written; what `encode` returns is a view of it, valid until the next call. */
  private readonly scratch = Buffer.allocUnsafeSlow(BLOCK);

  /** `mtime` in seconds since the epoch. */
  constructor(base: { uid: number; gid: number; mtime: number }) {
    const t = this.template;
    let sum = 8 * SPACE; // the checksum field counts as spaces
    sum += putOctal(t, UID, base.uid, 6);
    sum += putOctal(t, GID, base.gid, 6);
    sum += putOctal(t, MTIME, base.mtime | 0, 11);
    USTAR_MAGIC.copy(t, MAGIC);
    sum += sumOf(USTAR_MAGIC, 0, USTAR_MAGIC.length);
    sum += putOctal(t, DEVMAJOR, 0, 6);
    sum += putOctal(t, DEVMINOR, 0, 6);
    this.templateSum = sum;
  }

  /**
   * The header blocks of one entry: a ustar block (a view of the scratch block: copy it before the
   * next call), or a fresh buffer with a PAX header, its records and the entry's block.
   */
  encode(name: string, type: TarEntryType, mode: number, size: number, linkname?: string): Buffer {
    if (this.ustar(this.scratch, name, TYPEFLAGS[type], mode, size, linkname)) return this.scratch;
    const records = Buffer.from(paxRecord('path', name) + (linkname ? paxRecord('linkpath', linkname) : ''));
    // tar-stream names both blocks "PaxHeader"; readers take the names from the records.
    const stubLink = linkname ? 'PaxHeader' : undefined;
    const pad = (BLOCK - (records.length % BLOCK)) % BLOCK;
    const out = Buffer.alloc(BLOCK + records.length + pad + BLOCK);
    this.ustar(out, 'PaxHeader', TYPEFLAGS.pax, mode, records.length, stubLink);
    records.copy(out, BLOCK);
    this.ustar(out.subarray(out.length - BLOCK), 'PaxHeader', TYPEFLAGS[type], mode, size, stubLink);
    return out;
  }

  /** One ustar block at the start of `buf`; false (nothing meaningful written) when the names do not fit ustar. */
  private ustar(buf: Buffer, name: string, typeflag: number, mode: number, size: number, linkname?: string): boolean {
    if (!isAscii(name)) return false;
    let prefix = '';
    while (name.length > NAME_LENGTH) {
      const i = name.indexOf('/');
      if (i === -1) return false;
      prefix += prefix ? `/${name.slice(0, i)}` : name.slice(0, i);
      name = name.slice(i + 1);
    }
    if (prefix.length > PREFIX_LENGTH) return false;
    if (linkname && Buffer.byteLength(linkname) > LINKNAME_LENGTH) return false;
    this.template.copy(buf, 0, 0, BLOCK);
    let sum = this.templateSum + typeflag;
    sum += putAscii(buf, NAME, name);
    sum += putOctal(buf, MODE, mode & 0o7777, 6);
    sum += writeSize(buf, SIZE, size);
    buf[TYPEFLAG] = typeflag;
    if (linkname) sum += sumOf(buf, LINKNAME, LINKNAME + buf.write(linkname, LINKNAME, 'utf8'));
    if (prefix) sum += putAscii(buf, PREFIX, prefix);
    putOctal(buf, CHECKSUM, sum, 6);
    return true;
  }
}

/** The size field; GNU base-256 for bodies of 8 GiB and more. Returns the bytes' sum. */
function writeSize(buf: Buffer, off: number, size: number): number {
  if (size < 8 ** 11) return putOctal(buf, off, size, 11);
  buf[off] = 0x80;
  let n = size;
  for (let i = 11; i > 0; i--) {
    buf[off + i] = n & 0xff;
    n = Math.floor(n / 0x100);
  }
  return sumOf(buf, off, off + 12);
}

/** A PAX record "<len> key=value\n", where len counts itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const len = Buffer.byteLength(body);
  let digits = String(len).length;
  if (String(len + digits).length > digits) digits++;
  return `${len + digits}${body}`;
}
