import { spawn } from 'node:child_process';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { KbError, UserError } from '../errors.js';

/** Debian package that ships a tool, for "missing tool" errors. */
export const TOOL_PACKAGES: Record<string, string> = {
  mksquashfs: 'squashfs-tools',
  unsquashfs: 'squashfs-tools',
  'mkfs.erofs': 'erofs-utils',
  'fsck.erofs': 'erofs-utils',
  'systemd-repart': 'systemd (systemd-repart; Debian 12 ships it in the systemd package)',
  'systemd-dissect': 'systemd-container',
  'systemd-sysext': 'systemd',
  openssl: 'openssl',
  getfattr: 'attr',
  systemctl: 'systemd',
};

export interface ToolResult {
  code: number;
  stdout: Buffer;
  stderr: string;
  /** The tool wrote more than `maxStdout` bytes and was killed; `stdout` holds the first `maxStdout`. */
  overflow?: boolean;
  /** The tool's files passed `diskCap` and it was killed. */
  diskOverflow?: boolean;
}

export interface ToolOptions {
  env?: NodeJS.ProcessEnv;
  input?: Buffer | string;
  check?: string;
  cwd?: string;
  /** Kill the tool once its output passes this many bytes (it reads a hostile image). */
  maxStdout?: number;
  /**
   * Kill the tool once the files it writes under `dir` take more than `bytes` of disk (allocated
   * blocks, so sparse files count what they use) or more than `entries` names: a tool unpacking a
   * hostile image must not fill the disk or the inode table. Checked every 100 ms (less often when
   * the walk itself grows long), so the overshoot is what the tool writes in that time.
   */
  diskCap?: { dir: string; bytes: number; entries: number };
  /**
   * Aborting kills the tool (SIGKILL); the promise then rejects with the abort reason, and only
   * once the tool has exited, so the caller may remove its files at once.
   */
  signal?: AbortSignal;
  /** Kill the tool (SIGKILL) when it has not finished after this long: a TIMEOUT error (default 30 minutes). */
  deadlineMs?: number;
}

/** Longer than any legitimate run of these tools on a node or a build host (mksquashfs of a few GiB). */
const TOOL_DEADLINE_MS = 30 * 60 * 1000;

/** Allocated bytes and entries under `dir`, stopping early once past the caps. */
async function diskUse(dir: string, cap: { bytes: number; entries: number }): Promise<{ bytes: number; entries: number }> {
  const use = { bytes: 0, entries: 0 };
  const walk = async (d: string): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(d);
    } catch {
      return; // not created yet, or removed under us
    }
    for (const n of names) {
      if (use.bytes > cap.bytes || use.entries > cap.entries) return;
      use.entries++;
      try {
        const st = await lstat(join(d, n));
        use.bytes += st.blocks * 512;
        if (st.isDirectory()) await walk(join(d, n));
      } catch {
        // raced with the tool: counted at the next check
      }
    }
  };
  await walk(dir);
  return use;
}

/**
 * Run an external tool to completion. A missing program is a UserError naming the Debian package
 * that ships it; a non-zero exit is returned (callers decide) unless `check` is set.
 */
export function runTool(cmd: string, args: string[], opts: ToolOptions = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    // Every way the tool is stopped early (abort, deadline, output or disk cap) is this one kill.
    const kill = () => child.kill('SIGKILL');
    const signal = opts.signal;
    if (signal?.aborted) kill();
    else signal?.addEventListener('abort', kill, { once: true });
    const deadlineMs = opts.deadlineMs ?? TOOL_DEADLINE_MS;
    let timedOut = false;
    const deadline = setTimeout(() => {
      timedOut = true;
      kill();
    }, deadlineMs);
    deadline.unref(); // the child holds the process open while it runs, never this timer
    const out: Buffer[] = [];
    let size = 0;
    let overflow = false;
    let err = '';
    child.stdout.on('data', (b: Buffer) => {
      if (overflow) return;
      size += b.length;
      out.push(b);
      if (opts.maxStdout !== undefined && size > opts.maxStdout) {
        overflow = true;
        kill();
      }
    });
    child.stderr.on('data', (b: Buffer) => {
      if (err.length < 64 * 1024) err += b.toString('utf8');
    });
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(deadline);
      if (e.code === 'ENOENT') {
        const pkg = TOOL_PACKAGES[cmd] ?? cmd;
        reject(new UserError(`${cmd} is not installed`, `install it: apt-get install -y ${pkg.split(' ')[0]}${pkg.includes(' ') ? ` (${pkg})` : ''}`));
      } else reject(e);
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
    let diskOverflow = false;
    let watchdog: NodeJS.Timeout | undefined;
    let closed = false;
    const cap = opts.diskCap;
    if (cap) {
      // Each walk costs time in proportion to what the tool wrote; the next one waits at least 4×
      // as long as the last took, so the watchdog never takes more than a fifth of a core.
      const check = (): void => {
        const started = performance.now();
        void diskUse(cap.dir, cap).then((use) => {
          if (use.bytes > cap.bytes || use.entries > cap.entries) {
            diskOverflow = true;
            kill();
          } else if (!closed) watchdog = setTimeout(check, Math.max(100, 4 * (performance.now() - started)));
        });
      };
      watchdog = setTimeout(check, 100);
    }
    child.on('close', (code) => {
      closed = true;
      if (watchdog) clearTimeout(watchdog);
      signal?.removeEventListener('abort', kill);
      clearTimeout(deadline);
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      if (timedOut) {
        reject(
          new KbError('TIMEOUT', `${cmd} did not finish within ${formatDuration(deadlineMs)}; it was stopped`, {
            hint: 'the input may be far larger than expected, or the tool is stuck; run the command again',
          }),
        );
        return;
      }
      // A tool that finishes between two checks is measured once more: the cap holds however fast it was.
      const measured = cap && !diskOverflow ? diskUse(cap.dir, cap).then((use) => use.bytes > cap.bytes || use.entries > cap.entries) : Promise.resolve(diskOverflow);
      void measured.then((over) => {
        const stdout = Buffer.concat(out);
        const r: ToolResult = overflow ? { code: code ?? -1, stdout: stdout.subarray(0, opts.maxStdout), stderr: err, overflow } : { code: code ?? -1, stdout, stderr: err };
        if (over) r.diskOverflow = true;
        if (opts.check && r.code !== 0) {
          reject(new UserError(`${opts.check}: ${cmd} failed (exit ${r.code}): ${lastLines(r.stderr || r.stdout.toString('utf8'))}`));
          return;
        }
        resolve(r);
      }, reject);
    });
  });
}

function formatDuration(ms: number): string {
  return ms >= 60_000 ? `${Math.round(ms / 60_000)} min` : ms >= 1000 ? `${Math.round(ms / 1000)} s` : `${ms} ms`;
}

export function lastLines(s: string, n = 4): string {
  return s.trim().split('\n').slice(-n).join(' | ');
}
