/**
 * bench/build: kbundle build of a ~200 MB tree vs `tar --sort=name -cf - | gzip -6` on the same
 * tree, measured side by side in one run (medians of N runs). Run: npm run bench:build
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { generateTree, median, printTable, timeCommand, type Timed } from './common.js';

const runs = Number(process.env.BENCH_RUNS ?? 3);
const sizeMiB = Number(process.env.BENCH_SIZE_MIB ?? 200);
const work = resolve(process.env.BENCH_DIR ?? '.bench');
mkdirSync(work, { recursive: true });
const tree = generateTree(work, sizeMiB);
// The bench folder itself is the bundle: its bundle.yaml names the generated tree.
const bundle = work;
writeFileSync(join(bundle, 'bundle.yaml'), `name: bench\nversion: 1.0.0\ndescription: benchmark tree\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - src: ${basename(tree)}\n    dst: data\n`);

const cli = resolve('dist/src/cli/kbundle.js');
const out = join(work, 'out');
const kb: Timed[] = [];
const tg: Timed[] = [];
// Each timed run starts with no dirty pages from the previous one (writeback would bill it).
const settle = () => {
  rmSync(out, { recursive: true, force: true });
  rmSync(join(work, 'tar.tgz'), { force: true });
  spawnSync('sync');
};
for (let i = 0; i < runs; i++) {
  settle();
  kb.push(timeCommand(`node ${cli} build ${bundle} -o oci:${out}:bench`));
  settle();
  tg.push(timeCommand(`tar --sort=name -C ${tree} -cf - . | gzip -6 > ${join(work, 'tar.tgz')}`));
}
const k = median(kb.map((t) => t.seconds));
const t = median(tg.map((t) => t.seconds));
console.log(`bench/build: ${sizeMiB} MiB tree, ${runs} runs each, medians`);
printTable([
  ['tool', 'seconds', 'peak RSS MiB'],
  ['kbundle build', k.toFixed(2), Math.max(...kb.map((x) => x.maxRssMiB)).toFixed(0)],
  ['tar --sort=name | gzip -6', t.toFixed(2), Math.max(...tg.map((x) => x.maxRssMiB)).toFixed(0)],
]);
console.log(`ratio kbundle / tar|gzip = ${(k / t).toFixed(2)}x (target <= 0.80x)`);
