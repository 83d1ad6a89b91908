/**
 * The tar reader every path that reads a tar uses: layers (extract, sbom), image archives
 * (docker-archive, oci-archive) and builder downloads.
 * Headers are parsed straight from the decompressed chunks and small bodies come back as buffers:
 * no stream per entry. Extracting 8,000 small files through tar-stream cost ~150 ms of parsing
 * and per-entry streams and ~100 ms of their garbage on the main thread, which is the install's
 * critical path (the profile is in bench/README.md).
 *
 * Header semantics follow Go's archive/tar as containerd and go-containerregistry read layers:
 * ustar and GNU headers (prefix, base-256 numbers), GNU long names (`L`, `K`), PAX records
 * (global `g` merged under per-entry `x`; `path`, `linkpath` and `size` applied, all kept in
 * `header.pax`); links, symlinks, devices, fifos and folders carry no body whatever their size
 * field says; a NUL typeflag with a name ending in "/" is a folder; an all-zero block is skipped.
 */
import { Readable } from 'node:stream';
import { KbError } from '../errors.js';
import { chunksOf, type ReleasableChunks } from './chunks.js';
import {
  BLOCK,
  CHECKSUM,
  DEVMAJOR,
  DEVMINOR,
  GID,
  GNAME,
  LARGE_NUMBER_LENGTH,
  LINKNAME,
  LINKNAME_LENGTH,
  MAGIC,
  MODE,
  MTIME,
  NAME,
  NAME_LENGTH,
  OWNER_NAME_LENGTH,
  PREFIX,
  PREFIX_LENGTH,
  SIZE,
  SMALL_NUMBER_LENGTH,
  TYPEFLAG,
  UID,
  UNAME,
} from './ustar.js';

export type TarType = 'file' | 'link' | 'symlink' | 'character-device' | 'block-device' | 'directory' | 'fifo' | 'contiguous-file';

export interface TarHeader {
  name: string;
  /** null for a typeflag this reader does not know (e.g. GNU sparse files). */
  type: TarType | null;
  mode: number;
  uid: number;
  gid: number;
  /** Body bytes (0 for the types that carry none). */
  size: number;
  mtime: Date;
  linkname: string | undefined;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  /** The PAX records that applied to this entry (global ones merged under its own). */
  pax: Record<string, string> | undefined;
}

/** One entry: its header and its body (read `chunks` before asking for the next entry, or it is skipped). */
export interface TarEntry {
  header: TarHeader;
  /** The whole body when it is at most the inline limit (may share memory with the source's chunks). */
  data: Buffer | undefined;
  /** The body piece by piece (just `data` when there is data). */
  chunks: AsyncIterable<Buffer> | Iterable<Buffer>;
}

/** Bodies up to this size come back whole in `data`. */
export const INLINE_BODY = 1024 * 1024;
/** Bytes read ahead of the parser from a Readable source. */
const READ_AHEAD = 1024 * 1024;
/** A PAX or GNU long-name record larger than this is refused (Go's maxSpecialFileSize). */
const MAX_SPECIAL = 1024 * 1024;
const EMPTY: Buffer = Buffer.alloc(0);

const TYPES: Record<number, TarType> = {
  0x30: 'file',
  0: 'file',
  0x31: 'link',
  0x32: 'symlink',
  0x33: 'character-device',
  0x34: 'block-device',
  0x35: 'directory',
  0x36: 'fifo',
  0x37: 'contiguous-file',
};
const PAX = 0x78; // x
const PAX_GLOBAL = 0x67; // g
const GNU_LONG_NAME = 0x4c; // L
const GNU_LONG_LINK = 0x4b; // K
const HEADER_ONLY = new Set<TarType | null>(['link', 'symlink', 'character-device', 'block-device', 'directory', 'fifo']);

function invalid(what: string, why: string): KbError {
  return new KbError('INVALID_INPUT', `${what}: not a valid tar archive (${why})`);
}

function truncated(what: string): KbError {
  return new KbError('TRUNCATED', `${what}: the tar archive ends inside an entry`, { hint: 'the blob is incomplete; fetch or rebuild it' });
}

/** A NUL-terminated string field. */
function text(b: Buffer, off: number, len: number): string {
  let end = off;
  while (end < off + len && b[end] !== 0) end++;
  return b.toString('utf8', off, end);
}

/** A numeric field: octal (leading spaces and NULs skipped, up to the first space or non-digit) or GNU base-256. */
function number(b: Buffer, off: number, len: number): number {
  if (b[off]! & 0x80) {
    const negative = b[off] === 0xff;
    if (!negative && b[off] !== 0x80) return NaN;
    let n = 0;
    for (let i = off + 1; i < off + len; i++) n = n * 256 + (negative ? 0xff - b[i]! : b[i]!);
    return negative ? -n : n;
  }
  let i = off;
  const end = off + len;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  if (i === end || b[i] === 0x20) return 0;
  let n = NaN;
  for (; i < end; i++) {
    const d = b[i]! - 0x30;
    if (d < 0 || d > 7) break;
    n = (n || 0) * 8 + d;
  }
  return n;
}

function checksumOf(b: Buffer): number {
  let sum = 8 * 0x20; // the checksum field itself counts as spaces
  for (let i = 0; i < CHECKSUM; i++) sum += b[i]!;
  for (let i = TYPEFLAG; i < BLOCK; i++) sum += b[i]!;
  return sum;
}

/** PAX records (`<len> <key>=<value>\n`); a malformed record ends the list, as Go's reader would refuse it. */
function parsePax(b: Buffer, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  let off = 0;
  while (off < b.length) {
    const space = b.indexOf(0x20, off);
    const len = space < 0 ? NaN : Number(b.toString('latin1', off, space));
    if (!(len > 0) || space < 0 || off + len > b.length || b[off + len - 1] !== 0x0a) {
      if (b[off] === 0) break; // NUL padding after the last record
      throw invalid(what, 'malformed PAX record');
    }
    const record = b.toString('utf8', space + 1, off + len - 1);
    const eq = record.indexOf('=');
    if (eq <= 0) throw invalid(what, 'malformed PAX record');
    out[record.slice(0, eq)] = record.slice(eq + 1);
    off += len;
  }
  return out;
}

/** Decode a 512-byte header block; undefined for an all-zero block. */
function decodeHeader(b: Buffer, what: string): { header: TarHeader; flag: number } | undefined {
  const sum = checksumOf(b);
  if (sum === 8 * 0x20) return undefined; // zero outside the checksum: end-of-archive (or padding) block
  if (sum !== number(b, CHECKSUM, SMALL_NUMBER_LENGTH)) throw invalid(what, 'a header checksum does not match; is it compressed?');
  const ustar = b[MAGIC] === 0x75 && b.toString('latin1', MAGIC, MAGIC + 6) === 'ustar\0';
  const gnu = !ustar && b.toString('latin1', MAGIC, MAGIC + 8) === 'ustar  \0';
  if (!ustar && !gnu) throw invalid(what, 'a header is neither ustar nor GNU');
  const flag = b[TYPEFLAG]!;
  let name = text(b, NAME, NAME_LENGTH);
  if (ustar && b[PREFIX] !== 0) name = `${text(b, PREFIX, PREFIX_LENGTH)}/${name}`;
  let type: TarType | null = TYPES[flag] ?? null;
  if (flag === 0 && name.endsWith('/')) type = 'directory';
  const header: TarHeader = {
    name,
    mode: number(b, MODE, SMALL_NUMBER_LENGTH),
    uid: number(b, UID, SMALL_NUMBER_LENGTH),
    gid: number(b, GID, SMALL_NUMBER_LENGTH),
    size: number(b, SIZE, LARGE_NUMBER_LENGTH),
    mtime: new Date(1000 * number(b, MTIME, LARGE_NUMBER_LENGTH)),
    type,
    linkname: b[LINKNAME] === 0 ? undefined : text(b, LINKNAME, LINKNAME_LENGTH),
    uname: text(b, UNAME, OWNER_NAME_LENGTH),
    gname: text(b, GNAME, OWNER_NAME_LENGTH),
    devmajor: number(b, DEVMAJOR, SMALL_NUMBER_LENGTH),
    devminor: number(b, DEVMINOR, SMALL_NUMBER_LENGTH),
    pax: undefined,
  };
  return { header, flag };
}

/**
 * The entries of a tar stream (already decompressed, see codec.ts `decompress`). An error of `src`
 * reaches the reader as it is; a tar that stops inside an entry or header is a KbError TRUNCATED,
 * a malformed one INVALID_INPUT, both naming `what`. Leaving the loop early stops reading `src`.
 */
export function readTar(src: Readable | AsyncIterable<Buffer>, what: string, inline = INLINE_BODY): AsyncGenerator<TarEntry> {
  // A Readable is listened to at once (its error before the first step must not go unhandled).
  return entries(src instanceof Readable ? chunksOf(src, READ_AHEAD) : src, what, inline);
}

async function* entries(src: AsyncIterable<Buffer> | ReleasableChunks, what: string, inline: number): AsyncGenerator<TarEntry> {
  const input = src[Symbol.asyncIterator]();
  // A chunk is released when the reader moves on from it: by then the consumer has asked for the
  // next entry or piece, so it is done with the views it got. Within take(), chunks whose bytes
  // are being gathered are held until they were copied.
  const release = 'release' in src ? (c: Buffer) => src.release(c) : undefined;
  let held: Buffer[] | undefined;
  let chunk: Buffer = EMPTY;
  let pos = 0;
  /** Bytes of the current entry's body (and padding) not yet read. */
  let left = 0;
  /** Counts entries: a body iterated after the next entry was asked for fails instead of reading it. */
  let entry = 0;

  const refill = async (): Promise<boolean> => {
    for (;;) {
      const r = await input.next();
      if (r.done) return false;
      if (r.value.length === 0) continue;
      if (release && chunk !== EMPTY) {
        if (held) held.push(chunk);
        else release(chunk);
      }
      chunk = r.value;
      pos = 0;
      return true;
    }
  };
  /** Exactly `n` bytes, or undefined when the source ends before the first of them. */
  const take = async (n: number): Promise<Buffer | undefined> => {
    if (chunk.length - pos >= n) return chunk.subarray(pos, (pos += n));
    const parts: Buffer[] = [];
    let have = 0;
    held = [];
    try {
      while (have < n) {
        if (pos === chunk.length && !(await refill())) {
          if (have === 0) return undefined;
          throw truncated(what);
        }
        const k = Math.min(n - have, chunk.length - pos);
        parts.push(chunk.subarray(pos, pos + k));
        pos += k;
        have += k;
      }
      // One part is a view of the current chunk (the ones left behind held none of its bytes).
      return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
    } finally {
      const done = held;
      held = undefined;
      if (release) for (const c of done) release(c);
    }
  };
  const skip = async (n: number): Promise<void> => {
    while (n > 0) {
      if (pos === chunk.length && !(await refill())) throw truncated(what);
      const k = Math.min(n, chunk.length - pos);
      pos += k;
      n -= k;
    }
  };
  async function* body(n: number, of: number): AsyncGenerator<Buffer> {
    while (n > 0) {
      if (of !== entry) throw new Error('internal: a tar body was read after the next entry');
      if (pos === chunk.length && !(await refill())) throw truncated(what);
      const k = Math.min(n, chunk.length - pos);
      const piece = chunk.subarray(pos, (pos += k));
      left -= k;
      n -= k;
      yield piece;
    }
  }

  let globalPax: Record<string, string> | undefined;
  let pax: Record<string, string> | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;
  try {
    for (;;) {
      if (left > 0) await skip(left);
      left = 0;
      const block = chunk.length - pos >= BLOCK ? chunk.subarray(pos, (pos += BLOCK)) : await take(BLOCK);
      if (!block) {
        if (pax || longName !== undefined || longLink !== undefined) throw truncated(what);
        return;
      }
      const decoded = decodeHeader(block, what);
      if (!decoded) continue;
      const { header: h, flag } = decoded;
      const padded = (n: number) => n + ((BLOCK - (n % BLOCK)) % BLOCK);
      if (flag === PAX || flag === PAX_GLOBAL || flag === GNU_LONG_NAME || flag === GNU_LONG_LINK) {
        const size = h.size;
        if (!(size >= 0) || size > MAX_SPECIAL) throw invalid(what, `a ${String.fromCharCode(flag)} header of ${size} bytes`);
        const data = (await take(size)) ?? EMPTY;
        if (data.length < size) throw truncated(what);
        // Parsed before the padding is skipped: that may move to the next chunk and release this one.
        if (flag === PAX_GLOBAL) globalPax = parsePax(data, what);
        else if (flag === PAX) pax = parsePax(data, what);
        else if (flag === GNU_LONG_NAME) longName = text(data, 0, data.length);
        else longLink = text(data, 0, data.length);
        await skip(padded(size) - size);
        continue;
      }
      if (longName !== undefined) h.name = longName;
      if (longLink !== undefined) h.linkname = longLink;
      const records = globalPax || pax ? { ...globalPax, ...pax } : undefined;
      if (records) {
        if (records.path) h.name = records.path;
        if (records.linkpath) h.linkname = records.linkpath;
        if (records.size) h.size = /^\d+$/.test(records.size) ? Number(records.size) : NaN;
        h.pax = records;
      }
      pax = longName = longLink = undefined;
      if (HEADER_ONLY.has(h.type)) h.size = 0;
      const size = h.size;
      if (!(size >= 0) || !Number.isSafeInteger(size)) throw invalid(what, `entry "${h.name}" has a bad size`);
      left = padded(size);
      let data: Buffer | undefined;
      if (size <= inline) {
        data = size === 0 ? EMPTY : chunk.length - pos >= size ? chunk.subarray(pos, (pos += size)) : await take(size);
        if (!data || data.length < size) throw truncated(what);
        left -= size;
      }
      const seq = ++entry;
      yield { header: h, data, chunks: data ? [data] : body(size, seq) };
    }
  } finally {
    await input.return?.();
  }
}
