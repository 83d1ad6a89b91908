/**
 * `npm run bench`: run every bench (dist/bench/*.js but this one and the helpers) one after the
 * other with small sizes (~10 minutes in all on 2 cores), show their output, collect their
 * `RESULT {json}` lines (bench/result.ts) and print one table: work | peer | ratio | target | met?
 *
 *   npm run bench                      all benches
 *   npm run bench -- transfer extract  only these
 *
 * Sizes and runs: each bench's environment below; anything set in the caller's environment wins.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { printTable } from './common.js';
import { BENCH_ENV, loadNow, type BenchResult } from './result.js';

const here = dirname(fileURLToPath(import.meta.url));
const HELPERS = new Set(['all', 'common', 'result', 'registry', 'lag-proxy']);

/** Small sizes: the ratios hold at these sizes; the README says which were used for the last numbers. */
const SMALL: Record<string, Record<string, string>> = {
  build: { BENCH_SIZE_MIB: '100', BENCH_RUNS: '3' },
  zstd: { BENCH_SIZE_MIB: '100', BENCH_RUNS: '3' },
  transfer: { BENCH_TRANSFER_MIB: '300', BENCH_RUNS: '3', BENCH_RSS_MIB: '1024' },
  extract: { BENCH_SIZE_MIB: '200', BENCH_RUNS: '3' },
  sysext: { BENCH_SIZE_MIB: '100', BENCH_RUNS: '3' },
  verify: { BENCH_RUNS: '7' },
};
const DEFAULT_SMALL = { BENCH_SIZE_MIB: '100', BENCH_RUNS: '3' };
/** A bench that runs longer than this is stopped and reported as failed. */
const BENCH_TIMEOUT_MS = 20 * 60 * 1000;

interface Outcome {
  bench: string;
  results: BenchResult[];
  error?: string;
  seconds: number;
}

function runBench(name: string): Promise<Outcome> {
  const env = { ...process.env };
  for (const [k, v] of Object.entries(SMALL[name] ?? DEFAULT_SMALL)) env[k] ??= v;
  const started = performance.now();
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [join(here, `${name}.js`)], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    const results: BenchResult[] = [];
    let pending = '';
    const timer = setTimeout(() => child.kill('SIGTERM'), BENCH_TIMEOUT_MS);
    child.stdout.on('data', (chunk: Buffer) => {
      process.stdout.write(chunk);
      pending += chunk.toString('utf8');
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines) {
        if (!line.startsWith('RESULT ')) continue;
        try {
          results.push(JSON.parse(line.slice('RESULT '.length)) as BenchResult);
        } catch {
          /* a malformed line is reported as a missing result below */
        }
      }
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const seconds = (performance.now() - started) / 1000;
      const error = signal ? `stopped by ${signal}` : code !== 0 ? `exit code ${code}` : results.length === 0 ? 'printed no RESULT line' : undefined;
      resolvePromise({ bench: name, results, error, seconds });
    });
  });
}

/** Whether a result meets its target: "<= 0.7x" (wall ratio; "cpu" in it: CPU ratio), "< 200 MiB" (peak RSS). */
function targetMet(r: BenchResult): boolean | undefined {
  if (typeof r.met === 'boolean') return r.met;
  const m = /^\s*(<=|<|>=|>)\s*([\d.]+)\s*(x|MiB|ms)?/.exec(r.target);
  if (!m) return undefined;
  const [, op, num, unit] = m;
  const value = unit === 'MiB' ? r.rssMiB : unit === 'ms' ? r.valueMs : /cpu/i.test(r.target) ? r.ratioCpu : r.ratioWall;
  if (value === undefined || !Number.isFinite(value)) return undefined;
  const limit = Number(num);
  return op === '<=' ? value <= limit : op === '<' ? value < limit : op === '>=' ? value >= limit : value > limit;
}

function ratioText(r: BenchResult): string {
  const parts: string[] = [];
  if (r.ratioWall !== undefined) parts.push(`${r.ratioWall.toFixed(2)}x wall`);
  if (r.ratioCpu !== undefined) parts.push(`${r.ratioCpu.toFixed(2)}x cpu`);
  if (r.rssMiB !== undefined) parts.push(`${r.rssMiB.toFixed(0)} MiB RSS`);
  if (r.valueMs !== undefined) parts.push(`${r.valueMs.toFixed(0)} ms`);
  return parts.join(', ') || '-';
}

async function main(): Promise<void> {
  const available = readdirSync(here)
    .filter((f) => f.endsWith('.js') && !HELPERS.has(basename(f, '.js')))
    .map((f) => basename(f, '.js'))
    .sort();
  const asked = process.argv.slice(2);
  const unknown = asked.filter((a) => !available.includes(a));
  if (unknown.length) throw new Error(`no such bench: ${unknown.join(', ')} (have: ${available.join(', ')})`);
  const benches = asked.length ? asked : available;
  const outcomes: Outcome[] = [];
  for (const name of benches) {
    console.log(`\n=== bench/${name} (load ${loadNow()}) ===`);
    outcomes.push(await runBench(name));
  }
  const rows = [['bench', 'work', 'peer', 'ratio', 'target', 'met?', 'load']];
  for (const o of outcomes) {
    for (const r of o.results) {
      const met = targetMet(r);
      rows.push([o.bench, r.work, r.peer, ratioText(r), r.target, met === undefined ? '?' : met ? 'yes' : 'NO', r.load?.toFixed(1) ?? '-']);
    }
    if (o.error) rows.push([o.bench, `(${o.error})`, '-', '-', '-', 'NO', '-']);
  }
  console.log(`\n=== summary (${outcomes.map((o) => `${o.bench} ${o.seconds.toFixed(0)} s`).join(', ')}) ===`);
  printTable(rows);
  if (process.env.NODE_EXTRA_CA_CERTS && !BENCH_ENV.NODE_EXTRA_CA_CERTS) {
    console.log(`(commands ran without NODE_EXTRA_CA_CERTS, set here to ${process.env.NODE_EXTRA_CA_CERTS}; BENCH_KEEP_NODE_EXTRA_CA_CERTS=1 keeps it)`);
  }
  if (outcomes.some((o) => o.error)) process.exitCode = 1;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
