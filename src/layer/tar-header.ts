/**
 * ustar headers for the layer writer, byte for byte what tar-stream's pack writes for the same
 * entry (test/layer-tar-header.test.ts checks it against tar-stream): a name that does not fit
 * ustar's name/prefix split, is not ASCII or has a long link target gets a PAX header first.
 * Written by hand because the writer puts headers straight into its chunk buffers: tar-stream's
 * per-entry stream machinery cost more than the deflate of small files.
 */

export interface TarHeaderFields {
  /** Full path; directories end with "/". */
  name: string;
  type: 'file' | 'directory' | 'symlink';
  mode: number;
  uid: number;
  gid: number;
  /** Body size (0 for directories and symlinks). */
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  linkname?: string;
}

const BLOCK = 512;
const TYPEFLAG = { file: 0x30, directory: 0x35, symlink: 0x32, pax: 0x78 } as const;
const USTAR_MAGIC = Buffer.from('ustar\x0000', 'latin1');

/** `n` as `digits` octal digits and a space; all 7s when it does not fit (tar-stream's rule). */
function octal(n: number, digits: number): string {
  const s = n.toString(8);
  return s.length > digits ? `${'7'.repeat(digits)} ` : `${s.padStart(digits, '0')} `;
}

function writeSize(buf: Buffer, off: number, size: number): void {
  if (size.toString(8).length <= 11) {
    buf.write(octal(size, 11), off, 'latin1');
    return;
  }
  // GNU base-256 for bodies of 8 GiB and more.
  buf[off] = 0x80;
  let n = size;
  for (let i = 11; i > 0; i--) {
    buf[off + i] = n & 0xff;
    n = Math.floor(n / 0x100);
  }
}

/** One 512-byte ustar block, or undefined when the names do not fit ustar. */
function ustar(h: TarHeaderFields, typeflag: number): Buffer | undefined {
  let name = h.name;
  if (Buffer.byteLength(name) !== name.length) return undefined; // not ASCII
  let prefix = '';
  while (name.length > 100) {
    const i = name.indexOf('/');
    if (i === -1) return undefined;
    prefix += prefix ? `/${name.slice(0, i)}` : name.slice(0, i);
    name = name.slice(i + 1);
  }
  if (prefix.length > 155) return undefined;
  if (h.linkname && Buffer.byteLength(h.linkname) > 100) return undefined;
  const buf = Buffer.alloc(BLOCK);
  buf.write(name, 0, 'latin1');
  buf.write(octal(h.mode & 0o7777, 6), 100, 'latin1');
  buf.write(octal(h.uid, 6), 108, 'latin1');
  buf.write(octal(h.gid, 6), 116, 'latin1');
  writeSize(buf, 124, h.size);
  buf.write(octal(h.mtime | 0, 11), 136, 'latin1');
  buf[156] = typeflag;
  if (h.linkname) buf.write(h.linkname, 157, 'utf8');
  USTAR_MAGIC.copy(buf, 257);
  buf.write(octal(0, 6), 329, 'latin1'); // devmajor
  buf.write(octal(0, 6), 337, 'latin1'); // devminor
  if (prefix) buf.write(prefix, 345, 'latin1');
  let sum = 8 * 0x20; // the checksum field counts as spaces
  for (let i = 0; i < 148; i++) sum += buf[i]!;
  for (let i = 156; i < BLOCK; i++) sum += buf[i]!;
  buf.write(octal(sum, 6), 148, 'latin1');
  return buf;
}

/** A PAX record "<len> key=value\n", where len counts itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const len = Buffer.byteLength(body);
  let digits = String(len).length;
  if (String(len + digits).length > digits) digits++;
  return `${len + digits}${body}`;
}

/** The header blocks of one entry: a ustar block, or a PAX header, its records and the entry's block. */
export function encodeTarHeader(h: TarHeaderFields): Buffer {
  const plain = ustar(h, TYPEFLAG[h.type]);
  if (plain) return plain;
  const records = Buffer.from(paxRecord('path', h.name) + (h.linkname ? paxRecord('linkpath', h.linkname) : ''));
  // tar-stream names both blocks "PaxHeader"; readers take the names from the records.
  const stub = { ...h, name: 'PaxHeader', linkname: h.linkname ? 'PaxHeader' : undefined };
  const pad = (BLOCK - (records.length % BLOCK)) % BLOCK;
  return Buffer.concat([ustar({ ...stub, size: records.length }, TYPEFLAG.pax)!, records, Buffer.alloc(pad), ustar(stub, TYPEFLAG[h.type])!]);
}
