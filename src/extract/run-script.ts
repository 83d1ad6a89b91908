import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { fsErrorCode, KbError, UserError } from '../errors.js';
import { JAIL_BUNDLE_DIR, JAIL_PATH, jailCommand } from './confine.js';

export interface RunScriptResult {
  code: number;
  output: string;
}

export interface RunScriptOptions {
  env?: NodeJS.ProcessEnv;
  onOutput?: (chunk: string) => void;
  /** Stop run.sh (and everything it started) after this long; default 30 minutes. */
  timeoutMs?: number;
  /** Under --root: the jail (see confine.ts) the script runs in; absent = run on this host. */
  jail?: { root: string; env: Record<string, string> };
  /** Under --root without a jail: the root run.sh is told about in KBUNDLE_ROOT. */
  root?: string;
}

const MAX_OUTPUT = 1024 * 1024;
export const DEFAULT_SCRIPT_TIMEOUT_MS = 30 * 60 * 1000;
/** After run.sh exits or times out: how long its leftovers get between SIGTERM and SIGKILL. */
const KILL_GRACE_MS = 2000;

/**
 * Kairos run:// semantics: `/bin/sh run.sh` in the extracted image with the caller's environment
 * plus CONTAINERDIR and BUNDLE_TARGET. Contained: stdin is closed, the script gets its own
 * process group (or pid namespace in a jail) which is killed when run.sh exits or its time is up,
 * so a background child that keeps stdout open cannot hold kbundle. Stdout and stderr are kept
 * (interleaved, capped) for the error message.
 */
export async function runBundleScript(dir: string, bundleTarget: string, opts: RunScriptOptions = {}): Promise<RunScriptResult> {
  try {
    await access(join(dir, 'run.sh'));
  } catch {
    throw new UserError(`run://${bundleTarget}: the image has no run.sh at its root`, 'run:// needs a run bundle; use container:// to extract a plain image');
  }
  const base: NodeJS.ProcessEnv = { ...(opts.env ?? process.env), BUNDLE_TARGET: bundleTarget };
  delete base.KBUNDLE_ROOT;
  let file = '/bin/sh';
  let args = ['run.sh'];
  let env: NodeJS.ProcessEnv = { ...base, CONTAINERDIR: dir };
  if (opts.jail) {
    const cmd = jailCommand(opts.jail.root, opts.jail.env);
    file = cmd.file;
    args = cmd.args;
    env = { ...base, ...cmd.env, CONTAINERDIR: JAIL_BUNDLE_DIR, PATH: JAIL_PATH };
  } else if (opts.root !== undefined && opts.root !== '/') env.KBUNDLE_ROOT = opts.root;

  const child = spawn(file, args, { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe', ...(opts.jail ? ['pipe' as const] : [])], detached: true });
  let output = '';
  const collect = (c: Buffer) => {
    const s = c.toString('utf8');
    opts.onOutput?.(s);
    if (output.length < MAX_OUTPUT) output += s;
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  let jailReady = !opts.jail;
  (child.stdio[3] as Readable | undefined)?.on('data', () => (jailReady = true));

  const killGroup = (signal: NodeJS.Signals) => {
    try {
      if (child.pid) process.kill(-child.pid, signal);
    } catch {
      /* the group is gone */
    }
  };
  const timeoutMs = opts.timeoutMs ?? DEFAULT_SCRIPT_TIMEOUT_MS;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup('SIGTERM');
    setTimeout(() => killGroup('SIGKILL'), KILL_GRACE_MS).unref();
  }, timeoutMs);
  const closed = new Promise<void>((r) => child.on('close', () => r()));
  const code = await new Promise<number>((resolve, reject) => {
    // A node without /bin/sh (or unshare under --root) cannot run any run:// bundle.
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new KbError(fsErrorCode(e), `run://${bundleTarget}: cannot start ${file} (${e.code ?? e.message})`, {
          hint: opts.jail ? 'run.sh under --root runs confined, which needs unshare, mount and chroot; or pass --unconfined-scripts' : 'run:// bundles need /bin/sh and /dev/null on the node',
        }),
      ),
    );
    // 'exit', not 'close': a background child holding the pipes open must not hold kbundle.
    child.on('exit', (c, signal) => resolve(c ?? (signal ? 128 : 1)));
  }).finally(() => clearTimeout(timer));
  // The pipes close at once unless something run.sh started still holds them: that is stopped
  // (its whole process group; in a jail the pid namespace has ended with run.sh already).
  const waitClosed = (ms: number) => Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
  if (!(await waitClosed(200))) {
    killGroup('SIGTERM');
    if (!(await waitClosed(KILL_GRACE_MS))) {
      killGroup('SIGKILL');
      await waitClosed(500);
    }
  }
  killGroup('SIGKILL');
  child.stdout!.destroy();
  child.stderr!.destroy();
  (child.stdio[3] as Readable | undefined)?.destroy();
  if (timedOut) {
    throw new KbError('TIMEOUT', `run://${bundleTarget}: run.sh did not finish within ${Math.round(timeoutMs / 1000)} s and was stopped:\n${output.trimEnd()}`, {
      hint: 'raise the limit with --script-timeout <seconds> (or KBUNDLE_SCRIPT_TIMEOUT) if the script needs longer',
    });
  }
  if (!jailReady) {
    throw new KbError('UNSUPPORTED', `run://${bundleTarget}: cannot confine run.sh to ${opts.jail!.root}:\n${output.trimEnd()}`, {
      hint: 'run.sh under --root runs in a private mount namespace (unshare, mount, chroot as root or with user namespaces); --unconfined-scripts runs it on this host instead, with KBUNDLE_ROOT set',
    });
  }
  return { code, output };
}
