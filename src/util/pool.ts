/**
 * Bounded concurrency, in two shapes: `mapPool` for a known list of items, `limiter` for tasks
 * discovered while others run (a graph walk). Both never run more than `limit` at once. And
 * `settleAll`, for a few tasks already running: every one awaited before a failure is thrown.
 */

export interface PoolOptions {
  /** Aborting stops starting new items; the running calls see it through their own signal. */
  signal?: AbortSignal;
}

/**
 * The one bounded-concurrency map: at most `limit` calls of `fn` run at once, results keep the
 * order of `items`. After the first failure (or an abort of `opts.signal`) no new item is started
 * and the signal handed to the running calls is aborted; those calls are awaited (nothing runs on
 * after this returns), then the first error (or the abort reason) is thrown.
 */
export async function mapPool<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number, signal: AbortSignal) => Promise<R>, opts: PoolOptions = {}): Promise<R[]> {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`pool limit ${limit} must be a positive integer`);
  const out: R[] = new Array(items.length);
  const stop = new AbortController();
  const onAbort = () => stop.abort(opts.signal!.reason);
  if (opts.signal?.aborted) onAbort();
  else opts.signal?.addEventListener('abort', onAbort, { once: true });
  let next = 0;
  let failed = false;
  let firstError: unknown;
  const worker = async (): Promise<void> => {
    while (!failed && !stop.signal.aborted && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!, i, stop.signal);
      } catch (e) {
        if (!failed) firstError = e;
        failed = true;
        stop.abort(e);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(limit, Math.max(1, items.length)) }, worker));
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
  if (failed) throw firstError;
  if (stop.signal.aborted) throw stop.signal.reason;
  return out;
}

/** A counting semaphore: wraps tasks so that at most `limit` of them run at once, in arrival order. */
export function limiter(limit: number): <T>(task: () => Promise<T>) => Promise<T> {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limiter limit ${limit} must be a positive integer`);
  let active = 0;
  const queue: Array<() => void> = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (active >= limit) await new Promise<void>((r) => queue.push(r));
    else active++;
    try {
      return await task();
    } finally {
      // Hand the slot straight to the next waiter, so a newcomer cannot overtake it.
      const wake = queue.shift();
      if (wake) wake();
      else active--;
    }
  };
}

/**
 * Like Promise.all (results in order), but waits for every task before failing with the first
 * failure, so nothing runs on after the caller returns.
 */
export async function settleAll<T>(tasks: readonly Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(tasks);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}
