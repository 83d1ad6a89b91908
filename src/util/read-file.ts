/**
 * Reading a (small) file a user or an archive named: never a FIFO, device or socket (opening a
 * FIFO blocks, a device may never end), never more than a cap, and the size is checked before
 * any byte is read. Failures are KbErrors naming the file.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { KbError, UserError, fsErrorCode } from '../errors.js';

/** Open without blocking (a FIFO without a writer would block `open` itself), then check what it is. */
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK;

function tooBig(what: string, size: number | undefined, maxBytes: number): UserError {
  return new UserError(`${what}: ${size === undefined ? 'more than' : `${size} bytes,`} over the ${maxBytes}-byte limit for this file`);
}

function cannotRead(what: string, noun: string | undefined, e: unknown): KbError {
  return new KbError(fsErrorCode(e), `${what}: cannot read${noun ? ` ${noun}` : ''} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
}

export interface ReadOptions {
  /** What the file is, for "cannot read <noun>" (e.g. "the trust policy"). */
  noun?: string;
}

/**
 * Read a file a user named, refusing what is not a regular file (a FIFO would block, a device
 * never end) and what is over `maxBytes`, before reading it.
 */
export function readFileCappedSync(path: string, maxBytes: number, what = path, opts: ReadOptions = {}): Buffer {
  let fd: number;
  try {
    fd = openSync(path, OPEN_FLAGS);
  } catch (e) {
    throw cannotRead(what, opts.noun, e);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new UserError(`${what}: not a regular file`);
    if (st.size > maxBytes) throw tooBig(what, st.size, maxBytes);
    const buf = Buffer.alloc(st.size + 1); // one more byte shows a file that grew
    let n = 0;
    for (let got = -1; got !== 0 && n < buf.length; n += got) got = readSync(fd, buf, n, buf.length - n, n);
    if (n > maxBytes) throw tooBig(what, undefined, maxBytes);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** The async form of readFileCappedSync. */
export async function readFileCapped(path: string, maxBytes: number, what = path, opts: ReadOptions = {}): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, OPEN_FLAGS);
  } catch (e) {
    throw cannotRead(what, opts.noun, e);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new UserError(`${what}: not a regular file`);
    if (st.size > maxBytes) throw tooBig(what, st.size, maxBytes);
    const buf = Buffer.alloc(st.size + 1);
    let n = 0;
    for (let got = -1; got !== 0 && n < buf.length; n += got) got = (await fh.read(buf, n, buf.length - n, n)).bytesRead;
    if (n > maxBytes) throw tooBig(what, undefined, maxBytes);
    return buf.subarray(0, n);
  } finally {
    await fh.close();
  }
}

export function readTextFileCappedSync(path: string, maxBytes: number, what = path, opts: ReadOptions = {}): string {
  return readFileCappedSync(path, maxBytes, what, opts).toString('utf8');
}

export async function readTextFileCapped(path: string, maxBytes: number, what = path, opts: ReadOptions = {}): Promise<string> {
  return (await readFileCapped(path, maxBytes, what, opts)).toString('utf8');
}
