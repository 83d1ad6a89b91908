/**
 * bench/zstd: `kbundle build --compression zstd` (level 3, one zstd thread per core) of the bench
 * tree vs `tar --sort=name -cf - . | zstd -3 -T0` on the same tree, interleaved in one run, medians
 * of BENCH_RUNS (default 3): wall, CPU (user+sys of the whole process tree) and peak RSS. Also
 * checks that KBUNDLE_ZSTD_THREADS=1 gives the same layer digest. Last line: `RESULT <json>`.
 * Run: npm run build && node dist/bench/zstd.js   (BENCH_RUNS, BENCH_SIZE_MIB, BENCH_DIR)
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { generateTree, median, printTable } from './common.js';
import { BENCH_ENV } from './result.js';

interface Run {
  wall: number;
  cpu: number;
  rssMiB: number;
}

/** One shell command under /usr/bin/time: wall, user+sys of it and every child it waited for, peak RSS. */
function measure(cmd: string, env: NodeJS.ProcessEnv = BENCH_ENV): Run {
  const start = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', 'KBTIME %U %S %M', 'sh', '-c', cmd], { encoding: 'utf8', env, maxBuffer: 64 * 1024 * 1024 });
  const wall = Number(process.hrtime.bigint() - start) / 1e9;
  if (r.status !== 0) throw new Error(`benchmark command failed (${r.status}): ${cmd}\n${r.stderr}`);
  const m = /KBTIME ([\d.]+) ([\d.]+) (\d+)/.exec(r.stderr);
  if (!m) throw new Error(`no timing from /usr/bin/time for: ${cmd}\n${r.stderr}`);
  return { wall, cpu: Number(m[1]) + Number(m[2]), rssMiB: Number(m[3]) / 1024 };
}

const runs = Number(process.env.BENCH_RUNS ?? 3);
const sizeMiB = Number(process.env.BENCH_SIZE_MIB ?? 200);
const work = resolve(process.env.BENCH_DIR ?? '.bench');
mkdirSync(work, { recursive: true });
const tree = generateTree(work, sizeMiB);
// The bench folder itself is the bundle, as in bench/build.ts: its bundle.yaml names the tree.
const bundle = work;
writeFileSync(join(bundle, 'bundle.yaml'), `name: bench\nversion: 1.0.0\ndescription: benchmark tree\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - src: ${basename(tree)}\n    dst: data\n`);

const cli = resolve('dist/src/cli/kbundle.cjs');
const out = join(work, 'zstd-out');
const peerFile = join(work, 'tar.zst');
// Each timed run starts with no dirty pages from the previous one (writeback would bill it).
const settle = () => {
  rmSync(out, { recursive: true, force: true });
  rmSync(peerFile, { force: true });
  spawnSync('sync');
};
const layerDigest = (): string => {
  const index = JSON.parse(readFileSync(join(out, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const manifest = JSON.parse(readFileSync(join(out, 'blobs/sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as { layers: { digest: string }[] };
  return manifest.layers[0]!.digest;
};

const build = `node ${cli} build ${bundle} -o oci:${out}:bench --compression zstd`;
const peer = `tar --sort=name -C ${tree} -cf - . | zstd -q -3 -T0 > ${peerFile}`;
const load = loadavg()[0]!;
const kb: Run[] = [];
const pr: Run[] = [];
let digest = '';
for (let i = 0; i < runs; i++) {
  settle();
  kb.push(measure(build));
  digest = layerDigest();
  settle();
  pr.push(measure(peer));
}
settle();
measure(build, { ...BENCH_ENV, KBUNDLE_ZSTD_THREADS: '1' });
const sameDigestOn1Thread = layerDigest() === digest;
const loadAfter = loadavg()[0]!;

const med = (xs: Run[], k: keyof Run) => median(xs.map((x) => x[k]));
const k = { wall: med(kb, 'wall'), cpu: med(kb, 'cpu'), rss: Math.max(...kb.map((x) => x.rssMiB)) };
const p = { wall: med(pr, 'wall'), cpu: med(pr, 'cpu'), rss: Math.max(...pr.map((x) => x.rssMiB)) };
console.log(`bench/zstd: ${sizeMiB} MiB tree, ${runs} runs each (interleaved), medians; load ${load.toFixed(2)} → ${loadAfter.toFixed(2)}`);
printTable([
  ['tool', 'wall s', 'cpu s', 'peak RSS MiB'],
  ['kbundle build --compression zstd', k.wall.toFixed(2), k.cpu.toFixed(2), k.rss.toFixed(0)],
  ['tar --sort=name | zstd -3 -T0', p.wall.toFixed(2), p.cpu.toFixed(2), p.rss.toFixed(0)],
]);
const ratioWall = k.wall / p.wall;
const ratioCpu = k.cpu / p.cpu;
console.log(`ratio kbundle / tar|zstd: wall ${ratioWall.toFixed(2)}x, cpu ${ratioCpu.toFixed(2)}x (target wall <= 1.0x); same layer digest with 1 zstd thread: ${sameDigestOn1Thread}`);
const round = (x: number) => Math.round(x * 1000) / 1000;
console.log(
  `RESULT ${JSON.stringify({
    work: 'zstd layer build',
    peer: 'tar --sort=name | zstd -3 -T0',
    ratioWall: round(ratioWall),
    ratioCpu: round(ratioCpu),
    rssMiB: Math.round(k.rss),
    wallS: round(k.wall),
    peerWallS: round(p.wall),
    cpuS: round(k.cpu),
    peerCpuS: round(p.cpu),
    runs,
    sizeMiB,
    load: round(load),
    sameDigestOn1Thread,
    target: '<= 1.0x',
  })}`,
);
