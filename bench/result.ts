/**
 * What every bench reports to `npm run bench` (bench/all.ts): one line
 * `RESULT {"work", "peer", "ratioWall", "ratioCpu"?, "rssMiB"?, "target"}` per measured row, plus
 * helpers to time a whole process (wall, CPU, peak RSS) and to note the machine load.
 */
import { spawnSync } from 'node:child_process';
import { loadavg } from 'node:os';

export interface BenchResult {
  /** What kbundle did, e.g. "push 300 MiB / 4 layers". */
  work: string;
  /** What it was measured against in the same run, e.g. "skopeo copy". */
  peer: string;
  /** kbundle wall time / peer wall time (medians). */
  ratioWall?: number;
  /** kbundle CPU time (user + sys) / peer CPU time (medians). */
  ratioCpu?: number;
  /** kbundle's peak RSS. */
  rssMiB?: number;
  /** An absolute time, for targets in ms. */
  valueMs?: number;
  /** e.g. "<= 0.7x" (ratioWall; with "cpu" in it, ratioCpu), "< 200 MiB" (rssMiB), "<= 300 ms" (valueMs). */
  target: string;
  /** Whether the target is met, when the bench decides itself (else bench/all.ts reads `target`). */
  met?: boolean;
  /** The 1-minute load average when the row was measured. */
  load?: number;
}

export function emitResult(r: BenchResult): void {
  console.log(`RESULT ${JSON.stringify({ ...r, load: r.load ?? loadNow() })}`);
}

export function loadNow(): number {
  return Math.round(loadavg()[0]! * 100) / 100;
}

export interface ProcessTime {
  seconds: number;
  cpuSeconds: number;
  maxRssMiB: number;
}

/**
 * The environment benches run commands in: this one without NODE_EXTRA_CA_CERTS, unless
 * BENCH_KEEP_NODE_EXTRA_CA_CERTS=1. Node 20 parses that file before any JavaScript runs (this
 * sandbox sets it to Debian's whole CA bundle: `node -e 0` 30 ms without it, 110 ms with it, on
 * 2026-12-05), a cost of the environment that neither the Go and C peers nor the node executable
 * (Node 24 reads it only when TLS is first used) pay, and that loopback benches have no use for.
 * kbundle reads the system CA bundle itself when it needs one (src/registry/connection.ts).
 */
export const BENCH_ENV: NodeJS.ProcessEnv =
  process.env.BENCH_KEEP_NODE_EXTRA_CA_CERTS === '1' ? process.env : Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_EXTRA_CA_CERTS'));

/** Run a shell command under /usr/bin/time -v: wall time, CPU (user + sys) and peak RSS of the whole command. */
export function timeProcess(cmd: string, env: NodeJS.ProcessEnv = BENCH_ENV): ProcessTime {
  const start = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-v', 'sh', '-c', cmd], { encoding: 'utf8', env, maxBuffer: 64 * 1024 * 1024 });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (r.status !== 0) throw new Error(`benchmark command failed (${r.status}): ${cmd}\n${r.stderr}`);
  const num = (re: RegExp): number => Number(re.exec(r.stderr)?.[1] ?? NaN);
  return {
    seconds,
    cpuSeconds: num(/User time \(seconds\): ([\d.]+)/) + num(/System time \(seconds\): ([\d.]+)/),
    maxRssMiB: num(/Maximum resident set size \(kbytes\): (\d+)/) / 1024,
  };
}
