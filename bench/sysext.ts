/**
 * bench/sysext: `kbundle sysext build` of a ~300 MB tree (GPT + dm-verity DDI, and plain) vs a
 * plain `mksquashfs` of the same tree with the same reproducibility flags, side by side in one run
 * (medians of N runs), and against the same verity work done by the C tools (mksquashfs +
 * veritysetup format). Target: kbundle's DDI ≤ 1.0× mksquashfs + veritysetup, wall and CPU.
 * Prints `RESULT {json}` lines (bench/result.ts).
 * Run: npx tsc -p . && node dist/bench/sysext.js   (BENCH_RUNS, BENCH_SIZE_MIB, BENCH_DIR)
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { generateTree, median, printTable } from './common.js';
import { BENCH_ENV, emitResult, loadNow, timeProcess, type ProcessTime } from './result.js';

type Timed = ProcessTime;

const runs = Number(process.env.BENCH_RUNS ?? 7);
const sizeMiB = Number(process.env.BENCH_SIZE_MIB ?? 300);
const work = resolve(process.env.BENCH_DIR ?? '.bench');
// The extension tree: <work>/sysext-tree/usr/share/tree-<N>m (the shared generated content, under usr/).
const tree = join(work, `sysext-tree-${sizeMiB}m`);
mkdirSync(join(tree, 'usr', 'share'), { recursive: true });
generateTree(join(tree, 'usr', 'share'), sizeMiB);

const cli = resolve('dist/src/cli/kbundle.cjs');
const out = join(work, 'sysext-out');
const env = { ...BENCH_ENV };
delete env.SOURCE_DATE_EPOCH;
// Every bench runs without NODE_EXTRA_CA_CERTS (bench/result.ts BENCH_ENV). When this environment
// sets it, the DDI build is also measured with it: what this sandbox's Node 20 pays at every start.
const caEnv: NodeJS.ProcessEnv | undefined = process.env.NODE_EXTRA_CA_CERTS && !env.NODE_EXTRA_CA_CERTS ? { ...env, NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS } : undefined;
const ddiWithCa: Timed[] = [];
const ddi: Timed[] = [];
const plain: Timed[] = [];
const sq: Timed[] = [];
const sqVerity: Timed[] = [];
// Flush dirty pages before every timed run: otherwise one run pays for the previous run's writeback.
const flush = () => spawnSync('sync');
const mksquashfs = `mksquashfs ${join(tree, 'usr')} ${join(work, 'plain.sqfs')} -keep-as-directory -noappend -all-root -all-time 0 -mkfs-time 0 -no-xattrs -quiet -no-progress`;
// The same verity work done by the C tools: the hash tree of the squashfs (fixed salt and UUID).
const veritysetup = `veritysetup format ${join(work, 'plain.sqfs')} ${join(work, 'plain.verity')} --salt=${'ab'.repeat(32)} --uuid=12345678-1234-1234-1234-123456789abc >/dev/null`;
const steps: Array<() => void> = [
  () => {
    rmSync(out, { recursive: true, force: true });
    flush();
    ddi.push(timeProcess(`node ${cli} sysext build ${tree} --name bench -o ${out}`, env));
  },
  ...(caEnv
    ? [
        () => {
          rmSync(out, { recursive: true, force: true });
          flush();
          ddiWithCa.push(timeProcess(`node ${cli} sysext build ${tree} --name bench -o ${out}`, caEnv));
        },
      ]
    : []),
  () => {
    rmSync(out, { recursive: true, force: true });
    flush();
    plain.push(timeProcess(`node ${cli} sysext build ${tree} --name bench -o ${out} --format plain 2>/dev/null`, env));
  },
  () => {
    rmSync(join(work, 'plain.sqfs'), { force: true });
    flush();
    sq.push(timeProcess(mksquashfs, env));
  },
  () => {
    rmSync(join(work, 'plain.sqfs'), { force: true });
    rmSync(join(work, 'plain.verity'), { force: true });
    flush();
    sqVerity.push(timeProcess(`${mksquashfs} && ${veritysetup}`, env));
  },
];
// Each round starts with a different command, so that no row always runs first (right after the
// previous round's deletes) or always right after a particular neighbour.
for (let i = 0; i < runs; i++) for (let j = 0; j < steps.length; j++) steps[(i + j) % steps.length]!();
// What a bare Node process costs here before any JavaScript runs, with this environment and
// without the CA variable: the part of kbundle's overhead no code of its own can remove.
const nodeStart: Timed[] = [];
const nodeStartWithCa: Timed[] = [];
for (let i = 0; i < runs; i++) {
  nodeStart.push(timeProcess('node -e 0', env));
  if (caEnv) nodeStartWithCa.push(timeProcess('node -e 0', caEnv));
}
const med = (xs: Timed[], k: 'seconds' | 'cpuSeconds') => median(xs.map((t) => t[k]));
const row = (name: string, xs: Timed[]) => [name, med(xs, 'seconds').toFixed(2), med(xs, 'cpuSeconds').toFixed(2), Math.max(...xs.map((x) => x.maxRssMiB)).toFixed(0)];
console.log(`bench/sysext: ${sizeMiB} MiB tree, ${runs} runs each, medians`);
printTable([
  ['tool', 'wall s', 'cpu s', 'peak RSS MiB'],
  row('kbundle sysext build (ddi, verity)', ddi),
  ...(caEnv ? [row('  the same with NODE_EXTRA_CA_CERTS', ddiWithCa)] : []),
  row('kbundle sysext build --format plain', plain),
  row('mksquashfs (same flags)', sq),
  row('mksquashfs + veritysetup format', sqVerity),
]);
// Ratios per round (each kbundle run against the mksquashfs run next to it), then the median: a
// shared machine drifts over a benchmark, and pairing neighbours keeps that drift out of the ratio.
const paired = (a: Timed[], b: Timed[], k: 'seconds' | 'cpuSeconds') => median(a.map((x, i) => x[k] / b[i]![k])).toFixed(3);
const ratio = (a: Timed[], k: 'seconds' | 'cpuSeconds') => (med(a, k) / med(sq, k)).toFixed(3);
console.log(`wall ratio vs mksquashfs (median of per-round ratios): ddi ${paired(ddi, sq, 'seconds')}x, plain ${paired(plain, sq, 'seconds')}x (target <= 1.10x)`);
if (caEnv) console.log(`  ddi with NODE_EXTRA_CA_CERTS (set here: ${process.env.NODE_EXTRA_CA_CERTS}): ${paired(ddiWithCa, sq, 'seconds')}x`);
console.log(`  ratio of medians: wall ddi ${ratio(ddi, 'seconds')}x, plain ${ratio(plain, 'seconds')}x; cpu ddi ${ratio(ddi, 'cpuSeconds')}x, plain ${ratio(plain, 'cpuSeconds')}x`);
console.log(`ddi vs the same verity work by C tools (mksquashfs + veritysetup format): wall ${paired(ddi, sqVerity, 'seconds')}x, cpu ${paired(ddi, sqVerity, 'cpuSeconds')}x`);
const ms = (x: number) => `${Math.round(x * 1000)} ms`;
console.log(
  `overhead over mksquashfs (medians): ddi ${ms(med(ddi, 'seconds') - med(sq, 'seconds'))}, plain ${ms(med(plain, 'seconds') - med(sq, 'seconds'))}; ` +
    `of it, a bare \`node -e 0\` takes ${ms(med(nodeStart, 'seconds'))}${caEnv ? ` (${ms(med(nodeStartWithCa, 'seconds'))} with NODE_EXTRA_CA_CERTS)` : ''}`,
);
const ddiWork = `sysext DDI (squashfs + dm-verity), ${sizeMiB} MiB tree`;
const ddiPeer = 'mksquashfs + veritysetup format';
const num = (x: string) => Number(x);
emitResult({ work: ddiWork, peer: ddiPeer, ratioWall: num(paired(ddi, sqVerity, 'seconds')), target: '<= 1.0x', load: loadNow() });
emitResult({
  work: ddiWork,
  peer: ddiPeer,
  ratioCpu: num(paired(ddi, sqVerity, 'cpuSeconds')),
  rssMiB: Math.round(Math.max(...ddi.map((x) => x.maxRssMiB))),
  target: '<= 1.0x cpu',
  load: loadNow(),
});
