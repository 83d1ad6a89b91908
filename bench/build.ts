/**
 * bench/build: `kbundle build` of a gzip layer vs `tar --sort=name -cf - | pigz -6 -p $(nproc)` on
 * the same tree (2,000 small files + 20 half-random blobs, ~232 MB at the default size), run
 * interleaved in one run, medians of BENCH_RUNS: wall and CPU (user + sys) ratios, peak RSS. It
 * also checks that 1 and N thread-pool threads give the same layer digest, and measures peak
 * RSS building a BENCH_RSS_MIB (1 GiB) layer against a quarter of it (flat in layer size?).
 * Prints `RESULT {json}` lines (bench/result.ts). Run: npm run bench:build
 *   BENCH_RUNS (3), BENCH_SIZE_MIB (224), BENCH_RSS_MIB (1024; 0 skips), BENCH_DIR (.bench)
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { generateLargeTree, generateTree, median, printTable } from './common.js';
import { BENCH_ENV, emitResult, loadNow, timeProcess, type ProcessTime } from './result.js';

const runs = Number(process.env.BENCH_RUNS ?? 3);
const sizeMiB = Number(process.env.BENCH_SIZE_MIB ?? 224);
const rssMiB = Number(process.env.BENCH_RSS_MIB ?? 1024);
const work = resolve(process.env.BENCH_DIR ?? '.bench');
const cores = availableParallelism();
const cli = resolve('dist/src/cli/kbundle.cjs');

/** The bench folder is the bundle: its bundle.yaml copies one generated tree (inside it) to /data. */
function bundleFor(tree: string): string {
  writeFileSync(join(work, 'bundle.yaml'), `name: bench\nversion: 1.0.0\ndescription: benchmark tree\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - src: ${basename(tree)}\n    dst: data\n`);
  return work;
}

const layerDigest = (out: string): string => {
  const index = JSON.parse(readFileSync(join(out, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const manifest = JSON.parse(readFileSync(join(out, 'blobs', 'sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as { layers: { digest: string }[] };
  return manifest.layers[0]!.digest;
};

mkdirSync(work, { recursive: true });
const tree = generateTree(work, sizeMiB);
const out = join(work, 'build-out');
const peerOut = join(work, 'peer.tgz');
// Each timed run starts with no dirty pages from the previous one (writeback would bill it).
const settle = () => {
  rmSync(out, { recursive: true, force: true });
  rmSync(peerOut, { force: true });
  spawnSync('sync');
};
const kbCmd = (bundle: string) => `node ${cli} build ${bundle} -o oci:${out}:bench >/dev/null`;
const peerCmd = `tar --sort=name -C ${tree} -cf - . | pigz -6 -p ${cores} > ${peerOut}`;
const bundle = bundleFor(tree);

const kb: ProcessTime[] = [];
const peer: ProcessTime[] = [];
const loads: number[] = [];
let digestN = '';
for (let i = 0; i < runs; i++) {
  // Alternate which goes first, so neither always runs right after the other's deletes.
  const pair = [
    () => {
      kb.push(timeProcess(kbCmd(bundle)));
      digestN = layerDigest(out);
    },
    () => peer.push(timeProcess(peerCmd)),
  ];
  for (const step of i % 2 ? pair.reverse() : pair) {
    settle();
    step();
  }
  loads.push(loadNow());
}
settle();
timeProcess(kbCmd(bundle), { ...BENCH_ENV, UV_THREADPOOL_SIZE: '1' });
const digest1 = layerDigest(out);

const med = (xs: ProcessTime[], k: 'seconds' | 'cpuSeconds') => median(xs.map((x) => x[k]));
// Ratios per round (each kbundle run against the peer run next to it), then the median: a shared
// machine drifts over a benchmark, and pairing neighbours keeps that drift out of the ratio.
const paired = (k: 'seconds' | 'cpuSeconds') => median(kb.map((x, i) => x[k] / peer[i]![k]));
const load = median(loads);
console.log(`bench/build: ${sizeMiB} MiB tree (2,000 small files + 20 blobs), ${runs} runs each, medians, ${cores} cores, load ${load}`);
printTable([
  ['tool', 'wall s', 'cpu s', 'peak RSS MiB'],
  ['kbundle build (gzip -6)', med(kb, 'seconds').toFixed(2), med(kb, 'cpuSeconds').toFixed(2), Math.max(...kb.map((x) => x.maxRssMiB)).toFixed(0)],
  [`tar --sort=name | pigz -6 -p ${cores}`, med(peer, 'seconds').toFixed(2), med(peer, 'cpuSeconds').toFixed(2), Math.max(...peer.map((x) => x.maxRssMiB)).toFixed(0)],
]);
const ratioWall = Math.round(paired('seconds') * 1000) / 1000;
const ratioCpu = Math.round(paired('cpuSeconds') * 1000) / 1000;
console.log(`ratio kbundle / pigz: wall ${ratioWall}x (target <= 1.0x), cpu ${ratioCpu}x (target <= 1.15x)`);
console.log(`layer digest with UV_THREADPOOL_SIZE=1: ${digest1 === digestN ? 'the same' : `DIFFERENT (${digest1} vs ${digestN})`}`);
const rss = Math.round(Math.max(...kb.map((x) => x.maxRssMiB)));
const work232 = `gzip layer build, ${sizeMiB} MiB mixed tree`;
const peerName = `tar --sort=name | pigz -6 -p ${cores}`;
emitResult({ work: work232, peer: peerName, ratioWall, target: '<= 1.0x', load });
emitResult({ work: work232, peer: peerName, ratioCpu, rssMiB: rss, target: '<= 1.15x cpu', load });
emitResult({ work: `${work232}: same layer digest on 1 and ${cores}+ pool threads`, peer: 'UV_THREADPOOL_SIZE=1', target: 'same digest', met: digest1 === digestN, load });

if (rssMiB > 0) {
  // Peak RSS is flat in layer size when a quarter of the layer takes about as much.
  const rows: string[][] = [['layer', 'wall s', 'peak RSS MiB']];
  const peaks: number[] = [];
  for (const size of [rssMiB / 4, rssMiB]) {
    const b = bundleFor(generateLargeTree(work, size));
    settle();
    const t = timeProcess(kbCmd(b));
    peaks.push(t.maxRssMiB);
    rows.push([`${size} MiB`, t.seconds.toFixed(2), t.maxRssMiB.toFixed(0)]);
  }
  settle();
  printTable(rows);
  emitResult({
    work: `peak RSS building a ${rssMiB} MiB gzip layer`,
    peer: `${rssMiB / 4} MiB layer: ${peaks[0]!.toFixed(0)} MiB`,
    rssMiB: Math.round(peaks[1]!),
    target: '< 200 MiB',
    met: peaks[1]! < 200,
  });
}
