import { spawnSync } from 'node:child_process';
import { mapPool } from '../util/pool.js';
import { readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { buildBundle, defaultTag, planBuild, type BuildOptions, type BuildPlan } from '../builder/builder.js';
import { KbError, UserError } from '../errors.js';
import { OciLayout, writeFileAtomic } from '../store/oci-layout.js';
import { bundleInputDigest, discoverBundles, type CatalogBundle } from './discover.js';
import type { SbomRequest } from '../builder/output.js';
import type { WrittenSbom } from '../sbom/index.js';
import { gitCheckout, provenanceFacts, type ProvenanceFacts } from './provenance.js';

export const CATALOG_STATE_FILE = 'kbundle-catalog.json';
const BUILDER_VERSION = `kbundle-0.1/node-${process.versions.node.split('.')[0]}`;

export interface CatalogEntryState {
  name: string;
  version: string;
  tag: string;
  digest: string;
  mediaType: string;
  size: number;
  inputs: string;
  /** What `catalog publish --attest` puts into the SBOM and provenance of this build. */
  provenance?: ProvenanceFacts;
}

export interface CatalogBuildResult {
  layout: OciLayout;
  built: CatalogEntryState[];
  skipped: CatalogEntryState[];
  entries: CatalogEntryState[];
  /** With `sbom`: the documents of every selected bundle's platform images (built or unchanged). */
  sboms?: WrittenSbom[];
}

export async function readCatalogState(layout: OciLayout): Promise<Record<string, CatalogEntryState>> {
  try {
    return JSON.parse(await readFile(join(layout.dir, CATALOG_STATE_FILE), 'utf8')) as Record<string, CatalogEntryState>;
  } catch {
    return {};
  }
}

/** Bundle folders with changes since a git revision (committed, staged, working tree or untracked). */
export function changedBundleNames(catalogDir: string, rev: string): Set<string> {
  const root = resolve(catalogDir);
  const top = spawnSync('git', ['-C', root, 'rev-parse', '--show-toplevel'], { encoding: 'utf8' });
  if (top.status !== 0) throw new UserError(`--changed-since: ${catalogDir} is not inside a git checkout`);
  const verify = spawnSync('git', ['-C', root, 'rev-parse', '--verify', '--quiet', `${rev}^{commit}`], { encoding: 'utf8' });
  if (verify.status !== 0) throw new UserError(`--changed-since: "${rev}" is not a commit in this repository`);
  const diff = spawnSync('git', ['-C', root, 'diff', '--name-only', rev, '--', '.'], { encoding: 'utf8' });
  const untracked = spawnSync('git', ['-C', root, 'ls-files', '--others', '--exclude-standard', '--', '.'], { encoding: 'utf8' });
  const names = new Set<string>();
  const gitTop = top.stdout.trim();
  for (const line of `${diff.stdout}\n${untracked.stdout}`.split('\n')) {
    if (!line) continue;
    // diff prints paths from the repository top, ls-files relative to the folder.
    const abs = line.startsWith(relative(gitTop, root)) ? join(gitTop, line) : join(root, line);
    const rel = relative(root, abs);
    if (!rel.startsWith('..')) names.add(rel.split('/')[0]!);
  }
  return names;
}

/**
 * Build every catalog bundle (or those changed since a git revision) into one OCI layout, tagged
 * `<name>_<version>`. A bundle whose input digest matches the last build recorded in the layout,
 * and whose image is still there, is not rebuilt.
 */
export async function buildCatalog(
  catalogDir: string,
  /** The layout, or how to open it: opened only once every bundle has been planned, so a bad bundle writes nothing. */
  layoutOrOpen: OciLayout | (() => Promise<OciLayout>),
  opts: BuildOptions & {
    changedSince?: string;
    only?: string[];
    exclude?: string[];
    concurrency?: number;
    onBundle?: (name: string, action: 'built' | 'skipped') => void;
    sbom?: SbomRequest;
  } = {},
): Promise<CatalogBuildResult> {
  let bundles = await discoverBundles(catalogDir);
  if (bundles.length === 0) throw new UserError(`${catalogDir}: no bundles (folders with a bundle.yaml)`);
  if (opts.only?.length) {
    const unknown = opts.only.filter((n) => !bundles.some((b) => b.name === n));
    if (unknown.length) throw new KbError('NOT_FOUND', `no such bundle in ${catalogDir}: ${unknown.join(', ')}`);
    bundles = bundles.filter((b) => opts.only!.includes(b.name));
  }
  if (opts.exclude?.length) bundles = bundles.filter((b) => !opts.exclude!.includes(b.name));
  if (opts.changedSince) {
    const changed = changedBundleNames(catalogDir, opts.changedSince);
    bundles = bundles.filter((b) => changed.has(b.name));
  }
  // Validate every selected bundle before building any, so a bad spec costs nothing.
  const plans = await Promise.all(bundles.map(async (b) => ({ b, plan: await planBuild(b.dir, opts) })));
  const layout = typeof layoutOrOpen === 'function' ? await layoutOrOpen() : layoutOrOpen;
  const state = await readCatalogState(layout);
  const salt = `${BUILDER_VERSION}\0${opts.sourceDateEpoch ?? 0}\0${(opts.platforms ?? []).join(',')}\0${opts.uid ?? 0}:${opts.gid ?? 0}\0${opts.gzipLevel ?? 6}\0${opts.revision ?? ''}`;
  const built: CatalogEntryState[] = [];
  const skipped: CatalogEntryState[] = [];
  const checkout = plans.length ? gitCheckout(catalogDir) : { changed: [] };
  // Outside git, bundle folders are named from the catalog's parent (bundles/<name>), never by absolute path.
  const base = checkout.top ?? dirname(resolve(catalogDir));
  const facts = (plan: BuildPlan) => provenanceFacts(plan, checkout, base, opts.sourceDateEpoch ?? 0, opts.revision);

  const one = async ({ b, plan }: { b: CatalogBundle; plan: Awaited<ReturnType<typeof planBuild>> }) => {
    const inputs = await bundleInputDigest(b.dir, salt);
    const prev = state[b.name];
    if (prev && prev.inputs === inputs && (await layout.exists({ mediaType: prev.mediaType, digest: prev.digest, size: prev.size }))) {
      try {
        if ((await layout.resolve(prev.tag)).digest === prev.digest) {
          // Facts of the checkout as it is now (same inputs as the build's): the state does not depend on earlier runs.
          skipped.push({ ...prev, provenance: await facts(plan) });
          opts.onBundle?.(b.name, 'skipped');
          return;
        }
      } catch {
        /* tag gone: rebuild */
      }
    }
    const result = await buildBundle(plan, layout, opts);
    const tag = defaultTag(result);
    const entry: CatalogEntryState = {
      name: b.name,
      version: result.loaded.spec.version,
      tag,
      digest: result.root.digest,
      mediaType: result.root.mediaType,
      size: result.root.size,
      inputs,
      provenance: await facts(plan),
    };
    built.push(entry);
    opts.onBundle?.(b.name, 'built');
  };
  await mapPool(plans, opts.concurrency ?? 2, one);
  // index.json and the state file are written once, after every image is complete, in an order
  // that depends neither on -j nor on which build finished first (nor on earlier runs).
  const byName = (a: CatalogEntryState, z: CatalogEntryState) => a.name.localeCompare(z.name);
  built.sort(byName);
  for (const e of built) await layout.tag({ mediaType: e.mediaType, digest: e.digest, size: e.size }, e.tag);
  await layout.sortIndex();
  const next: Record<string, CatalogEntryState> = { ...state };
  for (const e of [...built, ...skipped]) next[e.name] = e;
  const sorted = Object.fromEntries(
    Object.keys(next)
      .sort()
      .map((k) => [k, next[k]!]),
  );
  await writeFileAtomic(join(layout.dir, CATALOG_STATE_FILE), JSON.stringify(sorted, null, 2));
  const entries = [...built, ...skipped].sort(byName);
  let sboms: WrittenSbom[] | undefined;
  if (opts.sbom) {
    const { platformImages, writeSboms } = await import('../sbom/index.js');
    const { factsFromSpec } = await import('../builder/sbom-facts.js');
    sboms = [];
    for (const e of entries) {
      const plan = plans.find((p) => p.b.name === e.name)!.plan;
      const images = await platformImages(layout, { mediaType: e.mediaType, digest: e.digest, size: e.size });
      const facts = (p: string) => factsFromSpec(plan.loaded, p, opts.sourceDateEpoch ?? 0, opts.revision, opts.onWarning);
      sboms.push(...(await writeSboms(layout, images, facts, opts.sbom.format, opts.sbom.dir)));
    }
  }
  return { layout, built, skipped: skipped.sort(byName), entries, ...(sboms ? { sboms } : {}) };
}
