/**
 * bench/extract: unpack a ~500 MB four-layer image with `kbundle install container:// --local-file`
 * (verification + flatten + apply), `umoci unpack --rootless`, and plain `tar -xzf` of the same
 * layers, side by side in one run. Run: npm run build && node dist/bench/extract.js
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { generateTree, median, printTable, timeCommand, type Timed } from './common.js';
import { emitResult } from './result.js';

const runs = Number(process.env.BENCH_RUNS ?? 3);
const totalMiB = Number(process.env.BENCH_SIZE_MIB ?? 500);
const layers = 4;
const work = resolve(process.env.BENCH_DIR ?? '.bench', 'extract');
mkdirSync(work, { recursive: true });

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** An OCI layout whose layers are `tar --sort=name | gzip -6` of four distinct trees. */
function makeImage(): { layout: string; layerFiles: string[] } {
  const layout = join(work, `oci-${totalMiB}m`);
  if (existsSync(join(layout, 'index.json'))) {
    const m = JSON.parse(readFileSync(join(layout, 'blobs/sha256', JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')).manifests[0].digest.slice(7)), 'utf8'));
    return { layout, layerFiles: m.layers.map((l: { digest: string }) => join(layout, 'blobs/sha256', l.digest.slice(7))) };
  }
  mkdirSync(join(layout, 'blobs/sha256'), { recursive: true });
  const descs: { mediaType: string; digest: string; size: number }[] = [];
  const diffIds: string[] = [];
  for (let i = 0; i < layers; i++) {
    const tree = generateTree(join(work, `src-${i}`), Math.round(totalMiB / layers));
    const tmp = join(layout, `layer-${i}.tmp`);
    const r = spawnSync('sh', ['-c', `tar --sort=name --owner=0 --group=0 --numeric-owner --transform 's,^\\.,layer${i},' -C '${tree}' -cf - . | tee '${tmp}.tar' | gzip -6 > '${tmp}'`]);
    if (r.status !== 0) throw new Error(r.stderr.toString());
    diffIds.push(`sha256:${sha256File(`${tmp}.tar`)}`);
    rmSync(`${tmp}.tar`);
    const hex = sha256File(tmp);
    renameSync(tmp, join(layout, 'blobs/sha256', hex));
    descs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${hex}`, size: statSync(join(layout, 'blobs/sha256', hex)).size });
  }
  const put = (obj: unknown): { digest: string; size: number } => {
    const b = Buffer.from(JSON.stringify(obj));
    const hex = createHash('sha256').update(b).digest('hex');
    writeFileSync(join(layout, 'blobs/sha256', hex), b);
    return { digest: `sha256:${hex}`, size: b.length };
  };
  const config = put({ architecture: process.arch === 'arm64' ? 'arm64' : 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds } });
  const manifest = put({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config }, layers: descs });
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'bench' } }] }),
  );
  return { layout, layerFiles: descs.map((d) => join(layout, 'blobs/sha256', d.digest.slice(7))) };
}

const { layout, layerFiles } = makeImage();
const cli = resolve('dist/src/cli/kbundle.cjs');
const out = join(work, 'out');
const results: Record<string, Timed[]> = { kbundle: [], umoci: [], tar: [] };
// Every run unpacks into a folder of its own, and all are deleted only after the last run. On ext4
// without a journal (this bench machine's disk), creating a file skips every inode freed in the
// last ~35 s (ext4's recently_deleted check), reading the inode table for each: after an `rm -rf`
// of the previous run's 8,000 files, file creation cost 50-500 µs and decided both tools' times
// (tar 2.6 s for 200 MiB, 1.0-1.3 s without it). A node's ext4 has a journal and never pays this.
// Each run starts after `sync`, with no dirty pages from the one before (writeback would bill it).
rmSync(out, { recursive: true, force: true });
const target = (tool: string, i: number) => {
  mkdirSync(join(out, `run-${i}`), { recursive: true });
  spawnSync('sync');
  return join(out, `run-${i}`, tool);
};
for (let i = 0; i < runs; i++) {
  results.kbundle!.push(timeCommand(`node ${cli} install container://${layout}:bench --local-file --root ${target('kbundle', i)} > /dev/null`));
  results.umoci!.push(timeCommand(`umoci unpack --rootless --image ${layout}:bench ${target('umoci', i)} > /dev/null 2>&1`));
  const tarDir = target('tar', i);
  results.tar!.push(timeCommand(`mkdir -p ${tarDir} && for l in ${layerFiles.join(' ')}; do tar -xzf "$l" -C ${tarDir}; done`));
}
rmSync(out, { recursive: true, force: true });
const med = (k: string) => median(results[k]!.map((t) => t.seconds));
const rss = (k: string) => Math.max(...results[k]!.map((t) => t.maxRssMiB)).toFixed(0);
console.log(`bench/extract: ${totalMiB} MiB in ${layers} gzip layers, ${runs} runs each, medians`);
printTable([
  ['tool', 'seconds', 'peak RSS MiB'],
  ['kbundle install container:// (verify + extract)', med('kbundle').toFixed(2), rss('kbundle')],
  ['umoci unpack --rootless', med('umoci').toFixed(2), rss('umoci')],
  ['tar -xzf (each layer)', med('tar').toFixed(2), rss('tar')],
]);
console.log(`ratio kbundle / tar -xzf = ${(med('kbundle') / med('tar')).toFixed(2)}x (target <= 0.90x); kbundle / umoci = ${(med('kbundle') / med('umoci')).toFixed(2)}x`);
emitResult({
  work: `install (verify + extract) ${totalMiB} MiB / ${layers} gzip layers`,
  peer: 'tar -xzf each layer',
  ratioWall: med('kbundle') / med('tar'),
  rssMiB: Number(rss('kbundle')),
  target: '<= 0.9x',
});
