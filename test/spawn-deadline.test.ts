import childProcess, { execFileSync, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { SYNC_CHILD_DEADLINE_MS, WRAPPED, withDeadline } from './helpers/spawn-deadline.js';

const timedOut = (r: ReturnType<typeof spawnSync>) => (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT';

describe('synchronous child processes in tests have a deadline (test/helpers/spawn-deadline.ts)', () => {
  it('the spawnSync and execFileSync every test file imports are the wrapped ones, with a deadline below the test timeout', () => {
    for (const fn of [spawnSync, execFileSync, childProcess.spawnSync, childProcess.execFileSync]) expect((fn as unknown as Record<symbol, unknown>)[WRAPPED]).toBe(true);
    expect(SYNC_CHILD_DEADLINE_MS).toBeLessThan(120_000);
  });

  it('a child that never ends is killed at the deadline, whichever way the call is written', () => {
    const sync = withDeadline(childProcess.spawnSync as never, 300) as unknown as typeof spawnSync;
    const started = Date.now();
    expect(timedOut(sync('sleep', ['30']))).toBe(true);
    expect(timedOut(sync('sleep', ['30'], { encoding: 'utf8' }))).toBe(true);
    expect(timedOut(sync('sh', { input: 'sleep 30' } as never))).toBe(true);
    expect(Date.now() - started).toBeLessThan(20_000);
    // A timeout the caller gives is kept, and a quick child is untouched.
    expect(timedOut(sync('sleep', ['30'], { timeout: 200 }))).toBe(true);
    expect(sync('sh', ['-c', 'echo ok'], { encoding: 'utf8' }).stdout).toBe('ok\n');
    const exec = withDeadline(childProcess.execFileSync as never, 300) as unknown as typeof execFileSync;
    expect(() => exec('sleep', ['30'])).toThrow(/ETIMEDOUT/);
  });
});
