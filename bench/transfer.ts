/**
 * Transfer benchmark: push and pull ~500 MB with kbundle and with `skopeo copy`, each tool against
 * its own fresh registry storage (skopeo's blob cache and registry dedup would otherwise turn
 * repeat pushes into mounts). Not part of the test suite.
 *
 *   npm run build && node dist/bench/transfer.js [--mib 500] [--layers 4] [--chunk-mib 16]
 *
 * Also exports `writeRandomImage`, which the registry tests use to make images of a chosen size.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { MediaType } from '../src/oci/mediatypes.js';
import type { Descriptor } from '../src/oci/types.js';
import { OciLayout } from '../src/store/oci-layout.js';

export interface RandomImage {
  layout: OciLayout;
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
}

/** Fill a file with `size` bytes of incompressible data in 1 MiB blocks; returns its digest. */
async function writeRandomBlob(path: string, size: number): Promise<string> {
  const hash = createHash('sha256');
  const out = createWriteStream(path);
  const block = 1 << 20;
  for (let left = size; left > 0;) {
    const n = Math.min(block, left);
    const b = randomBytes(n);
    hash.update(b);
    if (!out.write(b)) await new Promise<void>((r) => out.once('drain', () => r()));
    left -= n;
  }
  await new Promise<void>((res, rej) => out.end((e?: Error | null) => (e ? rej(e) : res())));
  return `sha256:${hash.digest('hex')}`;
}

/**
 * An OCI layout holding one image whose layers are random bytes of the given sizes (registries
 * do not look inside layers, so they need not be real tars), tagged `tag`.
 */
export async function writeRandomImage(dir: string, layerSizes: number[], tag = 'latest', platform = { os: 'linux', architecture: 'amd64' }): Promise<RandomImage> {
  const layout = await OciLayout.open(dir, { create: true });
  const layers: Descriptor[] = [];
  for (const size of layerSizes) {
    const tmp = join(dir, `.rand-${randomBytes(6).toString('hex')}`);
    const digest = await writeRandomBlob(tmp, size);
    await layout.adoptBlob(tmp, digest);
    layers.push({ mediaType: MediaType.OciLayer, digest, size });
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

interface Registry {
  url: string;
  host: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** A fresh docker-registry (plain HTTP, no auth) with its own storage. */
async function startRegistry(root: string, name: string): Promise<Registry> {
  const port = await freePort();
  const dir = join(root, name);
  mkdirSync(join(dir, 'storage'), { recursive: true });
  const cfg = join(dir, 'config.yml');
  writeFileSync(
    cfg,
    [
      'version: 0.1',
      'log: {level: error, accesslog: {disabled: true}}',
      `storage: {filesystem: {rootdirectory: "${join(dir, 'storage')}"}, delete: {enabled: true}}`,
      `http: {addr: "127.0.0.1:${port}"}`,
      '',
    ].join('\n'),
  );
  const child = spawn(process.env.KBUNDLE_TEST_REGISTRY_BIN ?? '/usr/bin/docker-registry', ['serve', cfg], { stdio: 'ignore' });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try {
      const r = await fetch(`${url}/v2/`);
      if (r.ok) break;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    host: `127.0.0.1:${port}`,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}

async function time(label: string, fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  const s = (performance.now() - t0) / 1000;
  console.log(`  ${label.padEnd(28)} ${s.toFixed(2)} s`);
  return s;
}

/** Flush dirty pages so a timed phase does not pay for the previous phase's writeback. */
function settle(): void {
  spawnSync('sync');
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status}`);
}

async function main(): Promise<void> {
  const mib = arg('mib', 500);
  const layerCount = arg('layers', 4);
  const chunkMib = arg('chunk-mib', 16);
  const { RegistryClient } = await import('../src/registry/client.js');
  const { RegistryTarget } = await import('../src/registry/registry-target.js');
  const { copyImage } = await import('../src/store/copy.js');

  if (spawnSync('skopeo', ['--version']).status !== 0) throw new Error('skopeo is not installed');
  const root = mkdtempSync(join(tmpdir(), 'kbundle-bench-'));
  try {
    const per = Math.floor((mib << 20) / layerCount);
    console.log(`generating ${layerCount} layers × ${(per / 1048576).toFixed(0)} MiB of random data …`);
    const image = await writeRandomImage(
      join(root, 'src'),
      Array.from({ length: layerCount }, () => per),
      'bench',
    );
    const total = image.layers.reduce((n, l) => n + l.size, 0);
    const mb = total / 1048576;

    console.log(`kbundle (chunk ${chunkMib} MiB, 4 parallel layers):`);
    const kreg = await startRegistry(root, 'reg-kbundle');
    const client = new RegistryClient({});
    let kPush = 0;
    let kPull = 0;
    try {
      const dst = new RegistryTarget(client, 'bench/kbundle', kreg.host, { access: 'push', upload: { chunkSize: chunkMib << 20, monolithicMax: chunkMib << 20 } });
      settle();
      kPush = await time('push', async () => {
        await copyImage(image.layout, 'bench', dst, 'v1');
      });
      const out = await OciLayout.open(join(root, 'pull-kbundle'), { create: true });
      settle();
      kPull = await time('pull', async () => {
        await copyImage(new RegistryTarget(client, 'bench/kbundle', kreg.host), 'v1', out, 'v1');
      });
    } finally {
      await client.close();
      await kreg.stop();
    }

    console.log('skopeo copy:');
    const sreg = await startRegistry(root, 'reg-skopeo');
    let sPush = 0;
    let sPull = 0;
    try {
      settle();
      sPush = await time('push', async () => run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${join(root, 'src')}:bench`, `docker://${sreg.host}/bench/skopeo:v1`]));
      settle();
      sPull = await time('pull', async () => run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${sreg.host}/bench/skopeo:v1`, `oci:${join(root, 'pull-skopeo')}:v1`]));
    } finally {
      await sreg.stop();
    }

    const rate = (s: number) => `${(mb / s).toFixed(0)} MiB/s`;
    console.log(`\n${mb.toFixed(0)} MiB in ${layerCount} layers`);
    console.log(`push: kbundle ${kPush.toFixed(2)} s (${rate(kPush)}), skopeo ${sPush.toFixed(2)} s (${rate(sPush)}), kbundle/skopeo time ratio ${(kPush / sPush).toFixed(2)}`);
    console.log(`pull: kbundle ${kPull.toFixed(2)} s (${rate(kPull)}), skopeo ${sPull.toFixed(2)} s (${rate(sPull)}), kbundle/skopeo time ratio ${(kPull / sPull).toFixed(2)}`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
