/**
 * bench/transfer: push and pull an image of random layers (default 300 MiB in 4 layers) with the
 * `kbundle` CLI and with `skopeo copy`, both as separate processes timed by /usr/bin/time (wall,
 * CPU, peak RSS), interleaved run by run (medians of BENCH_RUNS, default 3). Every push goes to a
 * fresh registry:2 (docker-registry) on loopback, so no blob is skipped or mounted; both tools pull
 * the same repository into a fresh OCI layout. Then peak RSS of a push and a pull of one 256 MiB
 * and one 1 GiB layer (flat in layer size; BENCH_RSS_MIB=0 skips it). Not part of the test suite.
 *
 *   npm run build && node dist/bench/transfer.js      (BENCH_TRANSFER_MIB=300 BENCH_RUNS=3 BENCH_RSS_MIB=1024
 *                                                      BENCH_NODE_FLAGS=--cpu-prof to profile kbundle)
 *
 * Also exports `writeRandomImage`, which the registry tests use to make images of a chosen size.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import { createGzip } from 'node:zlib';
import { MediaType } from '../src/oci/mediatypes.js';
import type { Descriptor } from '../src/oci/types.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { median, printTable } from './common.js';
import { startRegistry } from './registry.js';
import { emitResult, timeProcess, type ProcessTime } from './result.js';

export interface RandomImage {
  layout: OciLayout;
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
}

/**
 * Fill a file with `size` bytes of incompressible data in 1 MiB blocks; returns its digest. With
 * `gzip`, the bytes are wrapped in a gzip stream of stored (level 0) blocks, so tools that look at
 * the content (skopeo compresses what does not start with a gzip header before pushing to a
 * registry) see a compressed layer; `size` is then the payload, the file is a little larger.
 */
async function writeRandomBlob(path: string, size: number, gzip = false): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  const file = createWriteStream(path);
  let written = 0;
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      hash.update(chunk);
      written += chunk.length;
      if (file.write(chunk)) cb();
      else file.once('drain', () => cb());
    },
    final(cb) {
      file.end((e?: Error | null) => cb(e));
    },
  });
  const block = 1 << 20;
  async function* random(): AsyncGenerator<Buffer> {
    for (let left = size; left > 0; left -= block) yield randomBytes(Math.min(block, left));
  }
  if (gzip) await pipeline(random(), createGzip({ level: 0 }), sink);
  else await pipeline(random(), sink);
  return { digest: `sha256:${hash.digest('hex')}`, size: written };
}

/**
 * An OCI layout holding one image whose layers are random bytes of the given sizes (registries
 * do not look inside layers, so they need not be real tars), tagged `tag`. `gzip`: layers are
 * gzip streams (stored blocks) of those bytes, typed tar+gzip.
 */
export async function writeRandomImage(dir: string, layerSizes: number[], tag = 'latest', platform = { os: 'linux', architecture: 'amd64' }, opts: { gzip?: boolean } = {}): Promise<RandomImage> {
  const layout = await OciLayout.open(dir, { create: true });
  const layers: Descriptor[] = [];
  for (const size of layerSizes) {
    const tmp = join(dir, `.rand-${randomBytes(6).toString('hex')}`);
    const blob = await writeRandomBlob(tmp, size, opts.gzip);
    await layout.adoptBlob(tmp, blob.digest);
    layers.push({ mediaType: opts.gzip ? MediaType.OciLayerGzip : MediaType.OciLayer, digest: blob.digest, size: blob.size });
  }
  const configBytes = Buffer.from(JSON.stringify({ architecture: platform.architecture, os: platform.os, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) }, config: {} }));
  const config: Descriptor = { mediaType: MediaType.OciConfig, digest: `sha256:${createHash('sha256').update(configBytes).digest('hex')}`, size: configBytes.length };
  await layout.push(config, configBytes);
  const manifestBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers }));
  const manifest: Descriptor = { mediaType: MediaType.OciManifest, digest: `sha256:${createHash('sha256').update(manifestBytes).digest('hex')}`, size: manifestBytes.length };
  await layout.push(manifest, manifestBytes);
  await layout.tag(manifest, tag);
  return { layout, manifest, config, layers };
}

// ---------------------------------------------------------------------------------------------
// The benchmark itself
// ---------------------------------------------------------------------------------------------

const env = (name: string, def: number): number => Number(process.env[name] ?? def);

/** Flush dirty pages so a timed phase does not pay for the previous phase's writeback. */
function settle(): void {
  spawnSync('sync');
}

const cli = resolve('dist/src/cli/kbundle.cjs');
const nodeFlags = process.env.BENCH_NODE_FLAGS ?? '';
const kbundle = (args: string) => `${process.execPath} ${nodeFlags} ${cli} ${args} > /dev/null`;
const skopeo = (args: string) => `skopeo copy --quiet ${args} > /dev/null`;

interface Side {
  push: ProcessTime[];
  pull: ProcessTime[];
}

async function main(): Promise<void> {
  const mib = env('BENCH_TRANSFER_MIB', 300);
  const layerCount = env('BENCH_LAYERS', 4);
  const runs = env('BENCH_RUNS', 3);
  const rssMiB = env('BENCH_RSS_MIB', 1024);
  if (spawnSync('skopeo', ['--version']).status !== 0) throw new Error('skopeo is not installed (bash test/setup.sh)');
  const root = mkdtempSync(join(tmpdir(), 'kbundle-bench-transfer-'));
  try {
    const per = Math.floor((mib << 20) / layerCount);
    const src = join(root, 'src');
    await writeRandomImage(
      src,
      Array.from({ length: layerCount }, () => per),
      'bench',
      undefined,
      { gzip: true },
    );
    const mb = (per * layerCount) / 1048576;
    const k: Side = { push: [], pull: [] };
    const s: Side = { push: [], pull: [] };
    const pullFrom = await startRegistry(join(root, 'reg-pull'));
    try {
      const run = (cmd: string): ProcessTime => {
        settle();
        return timeProcess(cmd);
      };
      run(skopeo(`--dest-tls-verify=false oci:${src}:bench docker://${pullFrom.host}/bench/pull:v1`));
      for (let i = 0; i < runs; i++) {
        // Alternate who goes first, so neither always meets the other's writeback.
        const order = i % 2 === 0 ? ['kbundle', 'skopeo'] : ['skopeo', 'kbundle'];
        for (const tool of order) {
          const reg = await startRegistry(join(root, `reg-${tool}-${i}`));
          try {
            if (tool === 'kbundle') k.push.push(run(kbundle(`push oci:${src}:bench ${reg.host}/bench/k:v1`)));
            else s.push.push(run(skopeo(`--dest-tls-verify=false oci:${src}:bench docker://${reg.host}/bench/s:v1`)));
          } finally {
            await reg.stop();
          }
        }
        for (const tool of order) {
          const out = join(root, `pulled-${tool}`);
          if (tool === 'kbundle') k.pull.push(run(kbundle(`pull ${pullFrom.host}/bench/pull:v1 -o oci:${out}:v1`)));
          else s.pull.push(run(skopeo(`--src-tls-verify=false docker://${pullFrom.host}/bench/pull:v1 oci:${out}:v1`)));
          rmSync(out, { recursive: true, force: true });
        }
      }
    } finally {
      await pullFrom.stop();
    }

    const med = (xs: ProcessTime[], key: keyof ProcessTime) => median(xs.map((x) => x[key]));
    const rate = (t: number) => `${(mb / t).toFixed(0)} MiB/s`;
    console.log(`bench/transfer: ${mb.toFixed(0)} MiB in ${layerCount} random layers over loopback, ${runs} interleaved runs, medians (load ${loadavg()[0]!.toFixed(2)})`);
    const row = (name: string, xs: ProcessTime[]) => [
      name,
      med(xs, 'seconds').toFixed(2),
      rate(med(xs, 'seconds')),
      med(xs, 'cpuSeconds').toFixed(2),
      Math.max(...xs.map((x) => x.maxRssMiB)).toFixed(0),
    ];
    printTable([
      ['command', 'wall s', 'rate', 'cpu s', 'peak RSS MiB'],
      row('kbundle push', k.push),
      row('skopeo copy oci: → docker://', s.push),
      row('kbundle pull', k.pull),
      row('skopeo copy docker:// → oci:', s.pull),
    ]);
    for (const op of ['push', 'pull'] as const) {
      emitResult({
        work: `${op} ${mb.toFixed(0)} MiB / ${layerCount} layers`,
        peer: 'skopeo copy',
        ratioWall: med(k[op], 'seconds') / med(s[op], 'seconds'),
        ratioCpu: med(k[op], 'cpuSeconds') / med(s[op], 'cpuSeconds'),
        rssMiB: Math.max(...k[op].map((x) => x.maxRssMiB)),
        target: op === 'push' ? '<= 0.7x' : '<= 0.8x',
      });
    }
    if (rssMiB > 0) await measureRss(root, rssMiB);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** Peak RSS of kbundle pushing and pulling one layer of `small` and of `mib` MiB: must stay flat. */
async function measureRss(root: string, mib: number): Promise<void> {
  const sizes = [Math.min(256, mib), mib].filter((v, i, a) => a.indexOf(v) === i);
  const rows: string[][] = [['one layer of', 'push peak RSS MiB', 'pull peak RSS MiB']];
  let worst = 0;
  for (const size of sizes) {
    const src = join(root, `big-${size}`);
    await writeRandomImage(src, [size << 20], 'big', undefined, { gzip: true });
    const reg = await startRegistry(join(root, `reg-big-${size}`));
    const out = join(root, `pulled-big-${size}`);
    try {
      settle();
      const push = timeProcess(kbundle(`push oci:${src}:big ${reg.host}/bench/big:v1`));
      rmSync(src, { recursive: true, force: true });
      settle();
      const pull = timeProcess(kbundle(`pull ${reg.host}/bench/big:v1 -o oci:${out}:v1`));
      rows.push([`${size} MiB`, push.maxRssMiB.toFixed(0), pull.maxRssMiB.toFixed(0)]);
      worst = Math.max(worst, push.maxRssMiB, pull.maxRssMiB);
    } finally {
      rmSync(out, { recursive: true, force: true });
      await reg.stop();
    }
  }
  printTable(rows);
  emitResult({ work: `peak RSS push/pull of a ${mib} MiB layer`, peer: '-', rssMiB: worst, target: '< 200 MiB' });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
