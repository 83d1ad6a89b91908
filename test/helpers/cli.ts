/**
 * The one way tests run the kbundle CLI:
 * - `kbundle` / `kbundleAsync`: as a user runs it, a separate process. The command comes from
 *   `KBUNDLE_BIN` (an executable, e.g. a single-executable build) or else `node dist/src/cli/kbundle.cjs`.
 *   Use the async form when this process serves something the CLI talks to (a loopback registry
 *   or Sigstore stand-in): a synchronous spawn would block its event loop.
 * - `kbundleInProcess`: `main(argv, io)` with captured streams and its own environment, for
 *   in-process fault injection and fast checks of exit codes and messages.
 */
import { spawn, spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import type { CliIo, OutStream } from '../../src/cli/io.js';
import { deadlineError, SYNC_CHILD_DEADLINE_MS } from './spawn-deadline.js';

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');
/** The built CLI script (what `node` runs unless KBUNDLE_BIN names another executable). */
export const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'kbundle.cjs');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Standard input (e.g. for --password-stdin). */
  input?: string;
  /** Kill the process after this many milliseconds and fail (default SYNC_CHILD_DEADLINE_MS). */
  timeoutMs?: number;
}

/** The program and leading arguments that start kbundle. */
export function cliCommand(): { file: string; args: string[] } {
  const bin = process.env.KBUNDLE_BIN;
  return bin ? { file: bin, args: [] } : { file: process.execPath, args: [CLI] };
}

/** The same command for a shell script. */
export function cliShellCommand(): string {
  const { file, args } = cliCommand();
  return [file, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
}

/** Run the CLI as a process and wait for it (blocks this process). */
export function kbundle(args: string[], opts: CliOptions = {}): CliResult {
  const { file, args: lead } = cliCommand();
  const r = spawnSync(file, [...lead, ...args], {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    input: opts.input,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    timeout: opts.timeoutMs ?? SYNC_CHILD_DEADLINE_MS,
    killSignal: 'SIGKILL',
  });
  // ETIMEDOUT tells our kill from the process's own (the crash tests make it SIGKILL itself).
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT') throw deadlineError(`kbundle ${args.join(' ')}`, opts.timeoutMs ?? SYNC_CHILD_DEADLINE_MS, r.stderr);
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Run the CLI as a process without blocking this process's event loop. */
export function kbundleAsync(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  const { file, args: lead } = cliCommand();
  return new Promise((res, rej) => {
    const p = spawn(file, [...lead, ...args], { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const ms = opts.timeoutMs ?? SYNC_CHILD_DEADLINE_MS;
    let late = false;
    const deadline = setTimeout(() => {
      late = true;
      p.kill('SIGKILL');
    }, ms);
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', rej);
    p.on('close', (code, signal) => {
      clearTimeout(deadline);
      if (late) rej(deadlineError(`kbundle ${args.join(' ')}`, ms, stderr));
      else res({ code: code ?? (signal ? 128 : -1), stdout, stderr });
    });
    p.stdin.end(opts.input);
  });
}

function capture(tty = false): OutStream & { text(): string } {
  const parts: Buffer[] = [];
  return {
    isTTY: tty,
    write(chunk: string | Uint8Array) {
      parts.push(Buffer.from(chunk));
      return true;
    },
    text: () => Buffer.concat(parts).toString('utf8'),
  };
}

export interface InProcessOptions {
  /** Variables set (or, when undefined, removed) on top of this process's environment. */
  env?: Record<string, string | undefined>;
  /** Standard input; without it stdin is empty (and not a terminal). */
  stdin?: string;
}

/** Run `main()` in this process with its own streams and environment. */
export async function kbundleInProcess(args: string[], opts: InProcessOptions = {}): Promise<CliResult> {
  const { main } = await import('../../src/cli/main.js');
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const stdout = capture();
  const stderr = capture();
  const io: CliIo = { stdout, stderr, stdin: Readable.from(opts.stdin === undefined ? [] : [Buffer.from(opts.stdin)]), env };
  const code = await main(['node', 'kbundle', ...args], io);
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}
