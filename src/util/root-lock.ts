/**
 * One install at a time per root: `<root>/var/lib/kbundle/lock`, created exclusively. Node has no
 * flock(2), and a pid alone cannot tell a live holder in another pid namespace (an operator pod
 * and the host) from a dead one, so the holder refreshes the lock's mtime every few seconds: a
 * lock not refreshed for STALE_MS was left by a process that died, and is taken over.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, readlinkSync, renameSync, statSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { KbError } from '../errors.js';
import { onInterrupt } from './interrupt.js';
import { stateDir } from './state-dir.js';

const HEARTBEAT_MS = 2_000;
const STALE_MS = 15_000;
const POLL_MS = 200;
export const DEFAULT_LOCK_TIMEOUT_MS = 5 * 60_000;

export interface LockOptions {
  /** How long to wait for another install to finish (0: fail at once with BUSY). */
  timeoutMs?: number;
  /** Told once, when the lock is held by someone else and kbundle starts waiting. */
  onWait?: (holder: string) => void;
}

interface Holder {
  pid: number;
  /** The holder's pid namespace: its pid only means something to a process in the same one. */
  ns?: string;
  since: string;
  what: string;
}

function pidNamespace(): string | undefined {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return undefined;
  }
}

/** A holder in this pid namespace whose process is gone. */
function holderDead(h: Holder | undefined): boolean {
  if (!h || !h.ns || h.ns !== pidNamespace() || h.pid === process.pid) return false;
  try {
    process.kill(h.pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

function describe(h: Holder | undefined): string {
  return h ? `pid ${h.pid}, ${h.what}, since ${h.since}` : 'another kbundle';
}

function readHolder(file: string): Holder | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Holder;
  } catch {
    return undefined;
  }
}

function tryCreate(file: string, what: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, 'wx', 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
  try {
    writeSync(fd, JSON.stringify({ pid: process.pid, ns: pidNamespace(), since: new Date().toISOString(), what } satisfies Holder));
  } finally {
    closeSync(fd);
  }
  return true;
}

/** Remove a lock nobody refreshed for STALE_MS (rename first, so two waiters cannot both take it over). */
function breakIfStale(file: string): void {
  try {
    if (Date.now() - statSync(file).mtimeMs < STALE_MS && !holderDead(readHolder(file))) return;
    const grave = `${file}.stale-${randomBytes(4).toString('hex')}`;
    renameSync(file, grave);
    unlinkSync(grave);
  } catch {
    /* gone already, or another waiter broke it first */
  }
}

/** Run `fn` holding the lock of `root`. */
export async function withRootLock<T>(root: string, what: string, opts: LockOptions, fn: () => Promise<T>): Promise<T> {
  const file = join(stateDir(root), 'lock');
  const timeoutMs = opts.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  let told = false;
  while (!tryCreate(file, what)) {
    breakIfStale(file);
    if (tryCreate(file, what)) break;
    const holder = describe(readHolder(file));
    if (Date.now() >= deadline) {
      throw new KbError(timeoutMs === 0 ? 'BUSY' : 'TIMEOUT', `${root}: another kbundle is installing into this root (${holder})${timeoutMs ? `; waited ${Math.round(timeoutMs / 1000)} s` : ''}`, {
        hint: 'wait for it to finish, or raise --lock-timeout; a lock left by a killed kbundle is taken over (at once on the same host, after 15 s across pid namespaces)',
      });
    }
    if (!told) {
      told = true;
      opts.onWait?.(holder);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  const beat = setInterval(() => {
    try {
      const now = new Date();
      utimesSync(file, now, now);
    } catch {
      /* the root went away; the install itself will report that */
    }
  }, HEARTBEAT_MS);
  beat.unref();
  const release = () => {
    clearInterval(beat);
    try {
      unlinkSync(file);
    } catch {
      /* already gone */
    }
  };
  const off = onInterrupt(release);
  try {
    return await fn();
  } finally {
    off();
    release();
  }
}
