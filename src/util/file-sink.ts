import { close, open, writev } from 'node:fs';
import { Writable } from 'node:stream';

/**
 * A file written in large pieces: chunks are gathered until `batch` bytes (default 1 MiB) and
 * then written with one writev. fs.WriteStream writes as soon as a chunk arrives, so a network
 * body of 64 KiB chunks became ~3,000 thread-pool round trips per 300 MiB (each a futex wake
 * and a completion on the main thread); this makes it ~300. At most `batch` bytes wait here,
 * plus one write in flight. 'close' comes after the descriptor is closed (callers remove a
 * failed temp file only then).
 */
export class FileSink extends Writable {
  private fd?: number;
  private parts: Buffer[] = [];
  private pending = 0;
  bytesWritten = 0;

  constructor(
    readonly path: string,
    private readonly opts: { mode?: number; batch?: number } = {},
  ) {
    super({ highWaterMark: opts.batch ?? 1024 * 1024 });
  }

  private get batch(): number {
    return this.opts.batch ?? 1024 * 1024;
  }

  override _construct(cb: (e?: Error | null) => void): void {
    open(this.path, 'w', this.opts.mode ?? 0o644, (e, fd) => {
      this.fd = fd;
      cb(e);
    });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.parts.push(chunk);
    this.pending += chunk.length;
    if (this.pending >= this.batch) this.flush(cb);
    else cb();
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (e?: Error | null) => void): void {
    for (const { chunk } of chunks) {
      this.parts.push(chunk);
      this.pending += chunk.length;
    }
    if (this.pending >= this.batch) this.flush(cb);
    else cb();
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.flush(cb);
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    const fd = this.fd;
    this.fd = undefined;
    this.parts = [];
    if (fd === undefined) return cb(err);
    close(fd, (e) => cb(err ?? e));
  }

  private flush(cb: (e?: Error | null) => void): void {
    let parts = this.parts;
    this.parts = [];
    this.pending = 0;
    const fd = this.fd!;
    const next = (): void => {
      if (parts.length === 0) return cb();
      writev(fd, parts, (e, n) => {
        if (e) return cb(e);
        this.bytesWritten += n;
        // A short write: go on from where it stopped.
        while (n > 0 && parts.length > 0) {
          const first = parts[0]!;
          if (first.length <= n) {
            n -= first.length;
            parts = parts.slice(1);
          } else {
            parts = [first.subarray(n), ...parts.slice(1)];
            n = 0;
          }
        }
        next();
      });
    };
    next();
  }
}
