/**
 * Install a bundle the way Kairos would, without a node: build it, unpack its single layer and
 * either run its `run.sh` (run bundles) or copy the tree onto a fake root (container bundles).
 *
 *   const r = await installBundleForTest('bundles/metallb', { cloudConfig: { metallb: { version: '0.15.2' } } });
 *   r.exitCode; r.stderr; r.files();        // ['var/lib/rancher/k3s/server/manifests/metallb-helmchart.yaml', …]
 *   r.read('var/lib/…/x.yaml'); r.mode('usr/local/bin/kubectl');
 *   await r.cleanup();                       // or cleanupAllInstalls() in afterAll
 *
 * What mirrors Kairos (kairos-sdk bundles.go, see /work/shared/kairos-semantics.md):
 * - run bundles: the layer is unpacked into a fresh temp dir (CONTAINERDIR), `/bin/sh run.sh` runs
 *   there with the test's environment plus CONTAINERDIR and BUNDLE_TARGET (the ref without its
 *   scheme); KBUNDLE_ROOT=<root> makes kbundle's generated scripts write under the fake root.
 * - container bundles: the layer's files land on the root; nothing existing is deleted, ownership
 *   is not kept (tar --no-same-owner), modes are (tar -p).
 * - the cloud-config goes to `<root>/oem/90_custom.yaml`; `kairos-agent` on PATH is the stand-in
 *   in ./kairos-agent-standin.mjs, which reads `$KBUNDLE_ROOT/{usr/local/cloud-config,oem,…}`.
 *
 * Kept small on purpose: a later `kbundle install` replaces the unpacking done here.
 */
import { spawn } from 'node:child_process';
import { lstatSync, readFileSync, readlinkSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { buildTo } from '../../src/builder/output.js';

const HERE = dirname(fileURLToPath(import.meta.url));
export const KAIROS_AGENT_STANDIN = join(HERE, 'kairos-agent-standin.mjs');
export const CLOUD_CONFIG_PATH = 'oem/90_custom.yaml';

const REF_NAME = 'org.opencontainers.image.ref.name';
const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);

export interface InstallOptions {
  /** Written to `<root>/oem/90_custom.yaml`: a string verbatim, an object as `#cloud-config` YAML. */
  cloudConfig?: string | object;
  /** The one platform to build and install (default linux/amd64). */
  platform?: string;
  /** Prepare the fake root before the install (create folders, other config files, …). */
  rootSetup?: (root: string) => void | Promise<void>;
  /** Extra environment for run.sh (e.g. K3S_MANIFEST_DIR). */
  env?: Record<string, string>;
}

export interface InstalledBundle {
  /** The fake node root (KBUNDLE_ROOT). */
  root: string;
  /** Where the layer was unpacked (kept for inspection; Kairos deletes it). */
  containerDir: string;
  type: 'run' | 'container';
  /** run.sh's exit code (0 for container bundles). */
  exitCode: number;
  stdout: string;
  stderr: string;
  /** Files and symlinks under root that the install created (relative POSIX paths, sorted). */
  files(): string[];
  /** Every file and symlink under root, including the cloud-config and rootSetup's. */
  allFiles(): string[];
  read(rel: string): string;
  /** Permission bits (e.g. 0o755) of a path under root. */
  mode(rel: string): number;
  /** Target of a symlink under root. */
  link(rel: string): string;
  cleanup(): Promise<void>;
}

export interface BuiltLayer {
  layoutDir: string;
  layerPath: string;
  bundleType: 'run' | 'container';
  name: string;
}

const live = new Set<string>();

/** Remove every temp dir this module created and that was not cleaned up yet. */
export async function cleanupAllInstalls(): Promise<void> {
  await Promise.all([...live].map((d) => rm(d, { recursive: true, force: true })));
  live.clear();
}

async function newTempDir(prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  live.add(d);
  return d;
}

/** A folder holding a `kairos-agent` wrapper that runs the stand-in with this Node. */
let agentBinDir: Promise<string> | undefined;
export function kairosAgentBinDir(): Promise<string> {
  agentBinDir ??= (async () => {
    const d = await newTempDir('kbundle-agent-bin-');
    const wrapper = `#!/bin/sh\nexec '${process.execPath}' '${KAIROS_AGENT_STANDIN}' "$@"\n`;
    await writeFile(join(d, 'kairos-agent'), wrapper, { mode: 0o755 });
    return d;
  })();
  return agentBinDir;
}

/** Build `bundleDir` for one platform into a fresh OCI layout and locate its single layer. */
export async function buildSingleLayer(bundleDir: string, platform: string, workDir?: string): Promise<BuiltLayer> {
  const layoutDir = join(workDir ?? (await newTempDir('kbundle-oci-')), 'oci');
  const result = await buildTo(bundleDir, { transport: 'oci', path: layoutDir, ref: 't' }, { platforms: [platform] });
  const index = JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8')) as { manifests: { digest: string; mediaType: string; annotations?: Record<string, string> }[] };
  const blob = (digest: string) => join(layoutDir, 'blobs', ...digest.split(':'));
  let desc = index.manifests.find((m) => m.annotations?.[REF_NAME] === 't');
  if (!desc) throw new Error(`${layoutDir}: no manifest tagged "t" in index.json`);
  if (INDEX_TYPES.has(desc.mediaType)) {
    const inner = JSON.parse(await readFile(blob(desc.digest), 'utf8')) as { manifests: typeof index.manifests };
    desc = inner.manifests[0]!;
  }
  const manifest = JSON.parse(await readFile(blob(desc.digest), 'utf8')) as { layers: { digest: string }[] };
  if (manifest.layers.length !== 1) throw new Error(`${bundleDir}: expected one layer, the image has ${manifest.layers.length}`);
  const type = result.loaded.spec.type;
  if (type !== 'run' && type !== 'container') throw new Error(`${bundleDir}: cannot install a ${type} bundle in the harness`);
  return { layoutDir, layerPath: blob(manifest.layers[0]!.digest), bundleType: type, name: result.loaded.spec.name };
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) => resolvePromise({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
  });
}

async function mustRun(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<void> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
}

/** Files and symlinks under dir (not directories), relative POSIX paths, sorted. */
export async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const n of await readdir(d)) {
      const p = join(d, n);
      const st = await lstat(p);
      if (st.isDirectory()) await walk(p);
      else out.push(relative(dir, p).split('\\').join(posix.sep));
    }
  };
  await walk(dir);
  return out.sort();
}

function cloudConfigText(c: string | object): string {
  if (typeof c === 'string') return c;
  return `#cloud-config\n${stringify(c)}`;
}

/** Build, unpack and install a bundle onto a fresh fake root; see the module comment. */
export async function installBundleForTest(bundleDir: string, opts: InstallOptions = {}): Promise<InstalledBundle> {
  const platform = opts.platform ?? 'linux/amd64';
  const work = await newTempDir('kbundle-install-');
  const root = join(work, 'root');
  const containerDir = join(work, 'container');
  await mkdir(root, { recursive: true });
  await mkdir(containerDir, { recursive: true });

  const built = await buildSingleLayer(bundleDir, platform, work);
  // Kairos applies the flattened layer without ownership (archive.WithNoSameOwner).
  await mustRun('tar', ['-xzpf', built.layerPath, '--no-same-owner', '-C', containerDir]);

  if (opts.rootSetup) await opts.rootSetup(root);
  if (opts.cloudConfig !== undefined) {
    await mkdir(join(root, 'oem'), { recursive: true });
    await writeFile(join(root, CLOUD_CONFIG_PATH), cloudConfigText(opts.cloudConfig));
  }
  const before = new Set(await listTree(root));

  let result: RunResult = { code: 0, stdout: '', stderr: '' };
  if (built.bundleType === 'run') {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of ['K3S_MANIFEST_DIR', 'K0S_MANIFEST_DIR', 'KBUNDLE_ROOT', 'CONTAINERDIR', 'BUNDLE_TARGET']) delete env[k];
    Object.assign(env, {
      PATH: `${await kairosAgentBinDir()}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      CONTAINERDIR: containerDir,
      BUNDLE_TARGET: `kbundle.test/${built.name}:t`,
      KBUNDLE_ROOT: root,
      ...opts.env,
    });
    result = await run('/bin/sh', ['run.sh'], { cwd: containerDir, env });
  } else {
    // cp -a keeps modes and symlinks and merges into existing folders, like archive.Apply.
    await mustRun('cp', ['-a', `${containerDir}/.`, `${root}/`]);
  }

  const after = await listTree(root);
  const created = after.filter((f) => !before.has(f));
  const abs = (rel: string) => {
    const p = resolve(root, rel);
    if (relative(root, p).startsWith('..')) throw new Error(`${rel} is outside the root`);
    return p;
  };
  return {
    root,
    containerDir,
    type: built.bundleType,
    exitCode: result.code,
    stdout: result.stdout,
    stderr: result.stderr,
    files: () => [...created],
    allFiles: () => [...after],
    read: (rel) => readFileSync(abs(rel), 'utf8'),
    mode: (rel) => lstatSync(abs(rel)).mode & 0o7777,
    link: (rel) => readlinkSync(abs(rel)),
    cleanup: async () => {
      await rm(work, { recursive: true, force: true });
      live.delete(work);
    },
  };
}
