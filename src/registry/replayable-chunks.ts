import { KbError } from '../errors.js';
import { TransientTransferError } from './errors.js';
import { Readable } from 'node:stream';

/**
 * Cuts a source stream into consecutive chunks of bounded size. Reads are serialised, so two
 * attempts at sending the same chunk (a retry racing a dying request) never interleave.
 */
export class ChunkedSource {
  private readonly iter: AsyncIterator<Buffer | string>;
  private leftover: Buffer | undefined;
  private lock: Promise<unknown> = Promise.resolve();
  /** The source's own failure (e.g. digest mismatch), kept so it is not mistaken for a network error. */
  failure: unknown;
  consumed = 0;

  constructor(source: Readable | Buffer) {
    const readable = Buffer.isBuffer(source) ? Readable.from([source]) : source;
    this.iter = readable[Symbol.asyncIterator]();
  }

  /** The next piece of at most `max` bytes, or undefined at the end of the source. */
  read(max: number): Promise<Buffer | undefined> {
    const run = this.lock.then(async () => {
      if (this.leftover) {
        const b = this.leftover;
        if (b.length > max) {
          this.leftover = b.subarray(max);
          this.consumed += max;
          return b.subarray(0, max);
        }
        this.leftover = undefined;
        this.consumed += b.length;
        return b;
      }
      let r: IteratorResult<Buffer | string>;
      try {
        r = await this.iter.next();
      } catch (e) {
        this.failure ??= e;
        throw e;
      }
      if (r.done) return undefined;
      const b = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
      if (b.length > max) {
        this.leftover = b.subarray(max);
        this.consumed += max;
        return b.subarray(0, max);
      }
      this.consumed += b.length;
      return b;
    });
    this.lock = run.catch(() => undefined);
    return run;
  }

  /** Stop reading (releases the source stream). */
  async close(): Promise<void> {
    await this.lock;
    await this.iter.return?.();
  }
}

/** What a chunk sends: `length` bytes from `open(from)` (from 0 unless the chunk can be resumed). */
export interface UploadBody {
  readonly length: number;
  /** False: `open` works once, so a request carrying it must not be resent. */
  readonly replayable: boolean;
  open(from?: number): Readable;
}

function truncated(source: ChunkedSource, what: string): KbError {
  return new KbError('TRUNCATED', `${what}: the source ended after ${source.consumed} bytes, before the size its descriptor declares`, {
    hint: 'the source is truncated or corrupt; nothing was stored',
  });
}

/**
 * `length` bytes of a ChunkedSource sent once and kept nowhere: for a source that is cheaper to
 * read again than to hold (a local file). A second `open` (a request sent again) is TRANSIENT.
 */
export class OneShotChunk implements UploadBody {
  readonly replayable = false;
  private opened = false;
  constructor(
    private readonly source: ChunkedSource,
    readonly length: number,
    readonly what: string,
  ) {}

  open(from = 0): Readable {
    // Asked again: the request is being resent (a login the registry wanted mid-upload).
    if (this.opened || from !== 0) throw new TransientTransferError(`${this.what}: the upload has to start again from the source`);
    this.opened = true;
    const { source, length, what } = this;
    return Readable.from(
      (async function* () {
        for (let sent = 0; sent < length;) {
          const b = await source.read(length - sent);
          if (!b) throw truncated(source, what);
          sent += b.length;
          yield b;
        }
      })(),
      { objectMode: false },
    );
  }
}

/**
 * `length` bytes of a ChunkedSource, kept in memory until the chunk has been accepted, so the
 * chunk (or its tail from any offset) can be sent again after a failed request. Bytes are
 * pulled from the source lazily: the first attempt streams while it reads.
 */
export class ReplayableChunk implements UploadBody {
  readonly replayable = true;
  private readonly parts: Buffer[] = [];
  private filled = 0;
  private fill: Promise<void> = Promise.resolve();

  constructor(
    private readonly source: ChunkedSource,
    readonly length: number,
    readonly what: string,
  ) {}

  /** Ensure at least `n` parts are held (serialised so parts stay in order). */
  private more(): Promise<boolean> {
    const before = this.parts.length;
    const run = this.fill.then(async () => {
      if (this.parts.length > before || this.filled >= this.length) return;
      const b = await this.source.read(this.length - this.filled);
      if (!b) throw truncated(this.source, this.what);
      this.parts.push(b);
      this.filled += b.length;
    });
    this.fill = run.catch(() => undefined);
    return run.then(() => this.parts.length > before);
  }

  /** A fresh stream of the chunk from byte `from` (relative to the chunk start). */
  open(from = 0): Readable {
    const self = this;
    return Readable.from(
      (async function* () {
        let pos = 0;
        for (let i = 0; ; i++) {
          if (i >= self.parts.length && !(await self.more())) return;
          const part = self.parts[i]!;
          const end = pos + part.length;
          if (end > from) yield pos >= from ? part : part.subarray(from - pos);
          pos = end;
        }
      })(),
      { objectMode: false },
    );
  }
}
