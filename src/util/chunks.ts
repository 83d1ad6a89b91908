import type { Readable } from 'node:stream';

/**
 * The chunks of `src` one at a time, as they were pushed, with up to `ahead` bytes read ahead.
 * A Readable's own async iterator returns everything buffered as one buffer, copying each byte
 * once more (with a large read-ahead, megabytes per step); this hands over the chunks themselves.
 * The listeners are attached at once (an error before the first step is not an unhandled
 * 'error' event); an error of `src` is thrown at the next step; leaving the loop early destroys `src`.
 */
export function chunksOf(src: Readable, ahead: number): AsyncGenerator<Buffer> {
  const queue: Buffer[] = [];
  let queued = 0;
  let ended = false;
  let error: unknown;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  src.on('data', (c: Buffer) => {
    queue.push(c);
    queued += c.length;
    if (queued >= ahead) src.pause();
    notify();
  });
  src.on('end', () => {
    ended = true;
    notify();
  });
  src.on('error', (e) => {
    error = e;
    notify();
  });
  src.on('close', () => {
    // A stream destroyed without an error and without 'end' stopped early: never a clean end.
    if (!ended) error ??= new Error('the stream closed before its end');
    notify();
  });
  return drain();

  async function* drain(): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        if (error !== undefined) throw error;
        const c = queue.shift();
        if (c) {
          queued -= c.length;
          if (queued <= ahead / 2 && src.isPaused()) src.resume();
          yield c;
          continue;
        }
        if (ended) return;
        await new Promise<void>((r) => (wake = r));
      }
    } finally {
      if (!src.destroyed) src.destroy();
    }
  }
}

/**
 * Chunks whose memory their producer reuses (zlib-decode.ts OutputRecycler): the consumer calls
 * `release(chunk)` once for each chunk it got, when it keeps no view of it and has copied what it
 * needs. The tar reader does (tar-reader.ts), so entries' views are valid until the next step.
 */
export interface ReleasableChunks extends AsyncIterable<Buffer> {
  release(chunk: Buffer): void;
}
