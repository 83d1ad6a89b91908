/**
 * SBOMs of built images (`kbundle build --sbom spdx|cyclonedx`, `catalog build --sbom …`): one
 * document per platform image, SPDX 2.3 JSON or CycloneDX 1.6 JSON, byte-reproducible (same
 * inputs and SOURCE_DATE_EPOCH, same bytes). Written atomically; attest them with
 * `kbundle attest <image>@<platform digest> --predicate <file> --type spdxjson|cyclonedx`.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { digestOf } from '../oci/digest.js';
import { isIndexMediaType } from '../oci/mediatypes.js';
import { formatPlatform } from '../oci/platform.js';
import { fetchBytes, type Target } from '../oci/target.js';
import { ImageConfigSchema, parseIndex, parseJson, parseManifest, type Descriptor } from '../oci/types.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { cyclonedxDocument } from './cyclonedx.js';
import { collectInventory, type BuildFacts } from './inventory.js';
import { spdxDocument } from './spdx.js';

export type SbomFormat = 'spdx' | 'cyclonedx';

export const SBOM_FORMATS: readonly SbomFormat[] = ['spdx', 'cyclonedx'];

export function parseSbomFormat(v: string, flag = '--sbom'): SbomFormat {
  if (v === 'spdx' || v === 'spdx-json' || v === 'spdxjson') return 'spdx';
  if (v === 'cyclonedx' || v === 'cyclonedx-json' || v === 'cdx') return 'cyclonedx';
  throw new UserError(`${flag}: "${v}" must be spdx or cyclonedx`);
}

export interface WrittenSbom {
  platform: string;
  /** The platform image the SBOM describes (what to attest it to). */
  image: string;
  format: SbomFormat;
  path: string;
  /** sha256 of the file. */
  digest: string;
}

/** Serialised document: 2-space JSON and a final newline. */
export function renderSbom(doc: Record<string, unknown>): Buffer {
  return Buffer.from(`${JSON.stringify(doc, null, 2)}\n`, 'utf8');
}

function fileName(name: string, version: string, platform: string, format: SbomFormat): string {
  return `${name}_${version}.${platform.replace(/\//g, '-')}.${format === 'spdx' ? 'spdx' : 'cdx'}.json`;
}

/** The platform images of `root` (an index's manifests, or the one manifest with its config's platform). */
export async function platformImages(target: Target, root: Descriptor): Promise<{ platform: string; manifest: Descriptor }[]> {
  const bytes = await fetchBytes(target, root);
  if (isIndexMediaType(root.mediaType)) {
    const index = parseIndex(bytes, root.mediaType, `${target.name}@${root.digest}`);
    return index.manifests.filter((m) => m.platform).map((m) => ({ platform: formatPlatform(m.platform!), manifest: { mediaType: m.mediaType, digest: m.digest, size: m.size } }));
  }
  const m = parseManifest(bytes, root.mediaType, `${target.name}@${root.digest}`);
  const c = parseJson(ImageConfigSchema, await fetchBytes(target, m.config), `${target.name}@${m.config.digest}`);
  return [{ platform: formatPlatform({ os: c.os, architecture: c.architecture, ...(c.variant ? { variant: c.variant } : {}) }), manifest: root }];
}

/** Write one SBOM per platform image into `dir`. */
export async function writeSboms(
  target: Target,
  images: { platform: string; manifest: Descriptor }[],
  facts: (platform: string) => BuildFacts,
  format: SbomFormat,
  dir: string,
): Promise<WrittenSbom[]> {
  await mkdir(dir, { recursive: true });
  const out: WrittenSbom[] = [];
  for (const img of images) {
    const f = facts(img.platform);
    const inv = await collectInventory(target, img.manifest, img.platform, f);
    const bytes = renderSbom(format === 'spdx' ? spdxDocument(inv) : cyclonedxDocument(inv));
    const path = join(dir, fileName(f.name, f.version, img.platform, format));
    await writeFileAtomic(path, bytes);
    out.push({ platform: img.platform, image: img.manifest.digest, format, path, digest: digestOf(bytes) });
  }
  return out;
}

export { collectInventory, parseKubernetesYaml, type BuildFacts, type ImageInventory, type InventoryDownload } from './inventory.js';
export { spdxDocument } from './spdx.js';
export { cyclonedxDocument } from './cyclonedx.js';
