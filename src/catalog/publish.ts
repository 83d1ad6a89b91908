import { UserError } from '../errors.js';
import type { Descriptor } from '../oci/types.js';
import type { RegistryClient } from '../registry/client.js';
import { parseReference } from '../registry/reference.js';
import { RegistryTarget } from '../registry/registry-target.js';
import { copyImage } from '../store/copy.js';
import type { OciLayout } from '../store/oci-layout.js';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../store/oci-layout.js';
import { readCatalogState } from './build.js';
import type { CatalogAttestOptions, PublishedAttestation } from './attest.js';

/** Written next to the catalog layout by publish, read by `catalog index`. */
export const PUBLISHED_STATE_FILE = 'kbundle-published.json';

export interface PublishedState {
  registry: string;
  bundles: Record<string, { version: string; digest: string; references: string[]; signatures: string[]; attestations?: string[] }>;
}

export async function readPublishedState(layout: OciLayout): Promise<PublishedState | undefined> {
  try {
    return JSON.parse(await readFile(join(layout.dir, PUBLISHED_STATE_FILE), 'utf8')) as PublishedState;
  } catch {
    return undefined;
  }
}

export interface PublishOptions {
  client: RegistryClient;
  /** `host[:port]/namespace`: bundles go to `<namespace>/<name>:<version>` and `:latest`. */
  registry: string;
  latest?: boolean;
  /** Also tag `<namespace>/<communityRepo>:<name>_latest` as kairos-io/community-bundles does (empty: off). */
  communityRepo?: string;
  only?: string[];
  /** Sign each pushed digest; returns where the signature went (for the summary). */
  sign?: (target: RegistryTarget, desc: Descriptor, reference: string) => Promise<string>;
  /** Attach an SBOM of each platform image and a SLSA v1 provenance to every bundle (pushed or not: what is there already is kept). */
  attest?: CatalogAttestOptions;
  onBundle?: (name: string, status: string) => void;
}

export interface PublishedBundle {
  name: string;
  version: string;
  digest: string;
  references: string[];
  status: 'pushed' | 'unchanged';
  blobsCopied: number;
  signature?: string;
  attestations?: PublishedAttestation[];
}

/**
 * Push every bundle of a built catalog layout. Blobs and manifests the registry already holds
 * are skipped (copyImage checks before sending), so republishing an unchanged catalog moves
 * no layer bytes; only what was actually pushed is signed again.
 */
export async function publishCatalog(layout: OciLayout, opts: PublishOptions): Promise<PublishedBundle[]> {
  const ns = opts.registry.replace(/\/+$/, '');
  // Validate the namespace once as a reference.
  const probe = parseReference(`${ns}/probe:x`, '--registry');
  const nsRepo = probe.repository === 'probe' ? '' : probe.repository.slice(0, -'/probe'.length);
  const repoFor = (name: string) => (nsRepo ? `${nsRepo}/${name}` : name);
  const state = await readCatalogState(layout);
  let entries = Object.values(state).sort((a, b) => a.name.localeCompare(b.name));
  if (entries.length === 0) throw new UserError(`${layout.name}: no catalog build found`, 'run kbundle catalog build -o oci:<dir> first');
  if (opts.only?.length) entries = entries.filter((e) => opts.only!.includes(e.name));
  const out: PublishedBundle[] = [];
  for (const e of entries) {
    const repo = repoFor(e.name);
    const target = new RegistryTarget(opts.client, repo, probe.registry, { access: 'push' });
    const first = await copyImage(layout, e.tag, target, e.version);
    const references = [`${probe.registry}/${repo}:${e.version}`];
    if (opts.latest !== false) {
      await target.tag(first.root, 'latest');
      references.push(`${probe.registry}/${repo}:latest`);
    }
    let copied = first.blobsCopied + first.manifestsCopied;
    if (opts.communityRepo) {
      const crepo = repoFor(opts.communityRepo);
      const community = new RegistryTarget(opts.client, crepo, probe.registry, { access: 'push' });
      const c = await copyImage(layout, e.tag, community, `${e.name}_latest`, { mountFrom: [repo] });
      copied += c.blobsCopied + c.manifestsCopied;
      references.push(`${probe.registry}/${crepo}:${e.name}_latest`);
    }
    const status = copied > 0 ? 'pushed' : 'unchanged';
    const pub: PublishedBundle = { name: e.name, version: e.version, digest: first.root.digest, references, status, blobsCopied: first.blobsCopied };
    if (opts.sign && status === 'pushed') pub.signature = await opts.sign(target, first.root, references[0]!);
    if (opts.attest) pub.attestations = await (await import('./attest.js')).attestBundle(layout, target, first.root, e, `${probe.registry}/${repo}`, opts.attest);
    opts.onBundle?.(e.name, status);
    out.push(pub);
  }
  // Remember what is where (and which signatures exist) for `catalog index`.
  const prev = await readPublishedState(layout);
  const published: PublishedState = { registry: ns, bundles: prev?.registry === ns ? { ...prev.bundles } : {} };
  for (const p of out) {
    const before = published.bundles[p.name];
    const same = before && before.digest === p.digest;
    const keep = same ? before.signatures : [];
    const attestations = [...new Set([...(same ? (before.attestations ?? []) : []), ...(p.attestations ?? []).map((a) => a.location)])];
    published.bundles[p.name] = {
      version: p.version,
      digest: p.digest,
      references: p.references,
      signatures: p.signature ? [...new Set([...keep, ...p.signature.split(', ')])] : keep,
      ...(attestations.length ? { attestations } : {}),
    };
  }
  await writeFileAtomic(join(layout.dir, PUBLISHED_STATE_FILE), JSON.stringify(published, null, 2));
  return out;
}
