/**
 * Every network wait has a deadline. undici bounds the connect (connect timeout), the wait for
 * response headers (a hard deadline from the request, restarted only while our request body makes
 * progress) and a silent body (idle timeout); what it does not bound is a body that trickles —
 * a byte now and then keeps the idle timer happy forever. `minSpeed` is a dispatcher interceptor
 * that does what curl's `--speed-limit`/`--speed-time` do: a response body slower than
 * `speedLimit` bytes/s over a whole `speedTime` window is aborted with a network error
 * (`KB_SLOW_TRANSFER`), which callers treat like a reset: retried or resumed a bounded number of
 * times, then a clean TRANSIENT error. Windows in which our side paused the body (a slow disk,
 * a consumer not reading yet) are not held against the server.
 */
import type { Dispatcher } from 'undici';
import { UserError } from '../errors.js';

export interface NetLimits {
  /** TCP + TLS connect. */
  connectTimeoutMs: number;
  /** From the request (restarted while its body is being sent) to the end of the response headers. */
  headersTimeoutMs: number;
  /** Longest silence while a response body streams. */
  bodyTimeoutMs: number;
  /** Minimum average speed of a response body over each `speedTimeMs` window (bytes per second; 0 = off). */
  speedLimit: number;
  speedTimeMs: number;
  /** Attempts of one request (the first included) on resets, timeouts, 429 and 5xx. */
  attempts: number;
}

export const DEFAULT_NET_LIMITS: Readonly<NetLimits> = {
  connectTimeoutMs: 15_000,
  headersTimeoutMs: 60_000,
  bodyTimeoutMs: 60_000,
  speedLimit: 1024,
  speedTimeMs: 60_000,
  attempts: 5,
};

/** The environment variables that tune the limits (seconds, or bytes per second, or a count). */
export const NET_LIMIT_ENV = {
  connectTimeoutMs: 'KBUNDLE_CONNECT_TIMEOUT',
  headersTimeoutMs: 'KBUNDLE_RESPONSE_TIMEOUT',
  bodyTimeoutMs: 'KBUNDLE_IDLE_TIMEOUT',
  speedLimit: 'KBUNDLE_SPEED_LIMIT',
  speedTimeMs: 'KBUNDLE_SPEED_TIME',
  attempts: 'KBUNDLE_RETRIES',
} as const satisfies Record<keyof NetLimits, string>;

/** What a user wrote for one limit: the flag or environment variable, and its value. */
function parseLimit(key: keyof NetLimits, value: string, source: string): number {
  const n = Number(value.trim());
  const seconds = key.endsWith('Ms');
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || (key === 'attempts' && !Number.isInteger(n))) {
    throw new UserError(`${source}: "${value}" is not ${seconds ? 'a number of seconds' : key === 'attempts' ? 'a whole number of retries' : 'a number of bytes per second'}`);
  }
  if (seconds) {
    if (n === 0 || n > 86_400) throw new UserError(`${source}: ${value} s is out of range`, 'give a number of seconds between 0.001 and 86400');
    return Math.max(1, Math.round(n * 1000));
  }
  if (key === 'attempts') {
    if (n > 20) throw new UserError(`${source}: ${value} retries is too many`, 'at most 20');
    return n + 1;
  }
  return n;
}

/**
 * The limits for one command: flags (already strings from commander) over environment variables
 * over the defaults.
 */
export function resolveNetLimits(
  flags: Partial<Record<keyof NetLimits, string | number | undefined>> = {},
  env: NodeJS.ProcessEnv = process.env,
  flagNames: Partial<Record<keyof NetLimits, string>> = {},
): NetLimits {
  const out: NetLimits = { ...DEFAULT_NET_LIMITS };
  for (const key of Object.keys(NET_LIMIT_ENV) as Array<keyof NetLimits>) {
    const flag = flags[key];
    if (typeof flag === 'number') out[key] = flag;
    else if (flag !== undefined) out[key] = parseLimit(key, flag, flagNames[key] ?? key);
    else if (env[NET_LIMIT_ENV[key]] !== undefined) out[key] = parseLimit(key, env[NET_LIMIT_ENV[key]]!, NET_LIMIT_ENV[key]);
  }
  return out;
}

/** The error a too-slow body is aborted with: a network-level failure, retried like a reset. */
export class SlowTransferError extends Error {
  readonly code = 'KB_SLOW_TRANSFER';
  constructor(bytes: number, limits: Pick<NetLimits, 'speedLimit' | 'speedTimeMs'>) {
    super(`the server sent ${bytes} bytes in ${limits.speedTimeMs / 1000} s, below the minimum of ${limits.speedLimit} bytes/s (KBUNDLE_SPEED_LIMIT/KBUNDLE_SPEED_TIME)`);
    this.name = 'SlowTransferError';
  }
}

type Controller = Dispatcher.DispatchController;

/** Watches one response: counts body bytes per window and aborts the request when too few came. */
class MinSpeedHandler implements Dispatcher.DispatchHandler {
  private timer?: NodeJS.Timeout;
  private bytes = 0;
  private pausedInWindow = false;
  private controller?: Controller;

  constructor(
    private readonly inner: Dispatcher.DispatchHandler,
    private readonly limits: Pick<NetLimits, 'speedLimit' | 'speedTimeMs'>,
  ) {}

  /** A controller passed down that remembers whether the consumer paused the body. */
  private wrap(controller: Controller): Controller {
    if (this.controller) return this.controller;
    const self = this;
    this.controller = {
      get aborted() {
        return controller.aborted;
      },
      get paused() {
        return controller.paused;
      },
      get reason() {
        return controller.reason;
      },
      get rawHeaders() {
        return controller.rawHeaders;
      },
      get rawTrailers() {
        return controller.rawTrailers;
      },
      abort: (reason: Error) => controller.abort(reason),
      pause() {
        self.pausedInWindow = true;
        controller.pause();
      },
      resume: () => controller.resume(),
    };
    return this.controller;
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  onRequestStart(controller: Controller, context: unknown): void {
    this.inner.onRequestStart?.(this.wrap(controller), context);
  }

  onRequestUpgrade(
    controller: Controller,
    statusCode: number,
    headers: Parameters<NonNullable<Dispatcher.DispatchHandler['onRequestUpgrade']>>[2],
    socket: Parameters<NonNullable<Dispatcher.DispatchHandler['onRequestUpgrade']>>[3],
  ): void {
    this.inner.onRequestUpgrade?.(this.wrap(controller), statusCode, headers, socket);
  }

  onResponseStart(controller: Controller, statusCode: number, headers: Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseStart']>>[2], statusMessage?: string): void {
    const c = this.wrap(controller);
    if (statusCode >= 200 && this.limits.speedLimit > 0 && !this.timer) {
      const floor = (this.limits.speedLimit * this.limits.speedTimeMs) / 1000;
      this.timer = setInterval(() => {
        const slow = this.bytes < floor && !this.pausedInWindow && !controller.paused;
        if (slow && !controller.aborted) {
          this.stop();
          controller.abort(new SlowTransferError(this.bytes, this.limits));
          return;
        }
        this.bytes = 0;
        this.pausedInWindow = controller.paused;
      }, this.limits.speedTimeMs);
      this.timer.unref();
    }
    this.inner.onResponseStart?.(c, statusCode, headers, statusMessage);
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    this.bytes += chunk.length;
    this.inner.onResponseData?.(this.wrap(controller), chunk);
  }

  onResponseEnd(controller: Controller, trailers: Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseEnd']>>[1]): void {
    this.stop();
    this.inner.onResponseEnd?.(this.wrap(controller), trailers);
  }

  onResponseError(controller: Controller, error: Error): void {
    this.stop();
    this.inner.onResponseError?.(this.wrap(controller), error);
  }
}

/** The interceptor (for `agent.compose(...)`). */
export function minSpeed(limits: Pick<NetLimits, 'speedLimit' | 'speedTimeMs'>): Dispatcher.DispatcherComposeInterceptor {
  return (dispatch) => (opts, handler) => dispatch(opts, limits.speedLimit > 0 ? new MinSpeedHandler(handler, limits) : handler);
}
