/**
 * Loaded before every test file (vitest `setupFiles`): a synchronous child process started
 * without a `timeout` gets one. spawnSync blocks this process's event loop, so vitest cannot time
 * the test out; a child that never ends would hold the whole run until CI's own limit with no hint
 * of which test it was. Killed at the deadline, spawnSync reports ETIMEDOUT and the test fails.
 * Steps known to take longer (apt downloads, a cold executable build) pass their own `timeout`.
 */
import childProcess, { type SpawnSyncOptions } from 'node:child_process';
import { syncBuiltinESMExports } from 'node:module';

/** Below vitest's testTimeout (120 s in test/vitest.config.ts), so the failure names the test. */
export const SYNC_CHILD_DEADLINE_MS = 100_000;
/** Downloads on a cold cache (apt packages of the arm64 sysroot, npm's node packages). */
export const APT_DEADLINE_MS = 15 * 60_000;

/** What a test reports when it killed a child at its deadline (`what`: the command line). */
export function deadlineError(what: string, ms: number, stderr: string): Error {
  return new Error(`${what} did not finish within ${ms} ms (killed)\n${stderr}`);
}

type Sync = (file: string, ...rest: unknown[]) => unknown;

/** Marks a wrapped function (the test of this file checks the global ones carry it). */
export const WRAPPED = Symbol('kbundle.spawn-deadline');

/** `fn` with `timeout: ms` (and a SIGKILL at it) added to its options when the caller gave none. */
export function withDeadline(fn: Sync, ms = SYNC_CHILD_DEADLINE_MS): Sync {
  const wrapped: Sync = (file, ...rest) => {
    // (file, args?, options?): the options are the first plain object after the file.
    const at = rest.findIndex((a) => a !== null && typeof a === 'object' && !Array.isArray(a));
    const given = (at >= 0 ? rest[at] : {}) as SpawnSyncOptions;
    if (given.timeout !== undefined) return fn(file, ...rest);
    const opts = { killSignal: 'SIGKILL', ...given, timeout: ms };
    const args = at >= 0 ? rest.map((a, i) => (i === at ? opts : a)) : rest.length > 0 && Array.isArray(rest[0]) ? [rest[0], opts] : [[], opts];
    return fn(file, ...args);
  };
  return Object.assign(wrapped, { [WRAPPED]: true });
}

for (const name of ['spawnSync', 'execFileSync'] as const) {
  const original = childProcess[name] as unknown as Sync & { [WRAPPED]?: true };
  if (!original[WRAPPED]) (childProcess as unknown as Record<string, Sync>)[name] = withDeadline(original);
}
syncBuiltinESMExports(); // `import { spawnSync } from 'node:child_process'` sees the wrapped one
