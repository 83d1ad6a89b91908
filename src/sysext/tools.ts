import { spawn } from 'node:child_process';
import { UserError } from '../errors.js';

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
}

export interface ToolOptions {
  env?: NodeJS.ProcessEnv;
  input?: Buffer | string;
  check?: string;
  cwd?: string;
  /** Kill the tool once its output passes this many bytes (it reads a hostile image). */
  maxStdout?: number;
}

/**
 * Run an external tool to completion. A missing program is a UserError naming the Debian package
 * that ships it; a non-zero exit is returned (callers decide) unless `check` is set.
 */
export function runTool(cmd: string, args: string[], opts: ToolOptions = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
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
        child.kill('SIGKILL');
      }
    });
    child.stderr.on('data', (b: Buffer) => {
      if (err.length < 64 * 1024) err += b.toString('utf8');
    });
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') {
        const pkg = TOOL_PACKAGES[cmd] ?? cmd;
        reject(new UserError(`${cmd} is not installed`, `install it: apt-get install -y ${pkg.split(' ')[0]}${pkg.includes(' ') ? ` (${pkg})` : ''}`));
      } else reject(e);
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
    child.on('close', (code) => {
      const stdout = Buffer.concat(out);
      const r: ToolResult = overflow ? { code: code ?? -1, stdout: stdout.subarray(0, opts.maxStdout), stderr: err, overflow } : { code: code ?? -1, stdout, stderr: err };
      if (opts.check && r.code !== 0) {
        reject(new UserError(`${opts.check}: ${cmd} failed (exit ${r.code}): ${lastLines(r.stderr || r.stdout.toString('utf8'))}`));
        return;
      }
      resolve(r);
    });
  });
}

export function lastLines(s: string, n = 4): string {
  return s.trim().split('\n').slice(-n).join(' | ');
}
