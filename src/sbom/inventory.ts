/**
 * What one built image holds, read back from the image itself (every file of every layer, hashed)
 * and joined with what only the build knows: the pinned `url:` downloads (source URL, checksum,
 * declared licence) and, for Kubernetes manifests in the image, the container images and Helm
 * charts they reference (parsed from the YAML). `spdx.ts` and `cyclonedx.ts` serialise it.
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { errorMessage, UserError } from '../errors.js';
import { decompress } from '../layer/codec.js';
import { readTar } from '../util/tar-reader.js';
import { isManifestMediaType } from '../oci/mediatypes.js';
import { fetchBytes, type Target } from '../oci/target.js';
import { ImageConfigSchema, parseJson, parseManifest, type Descriptor } from '../oci/types.js';
import { parseYamlDocuments } from '../util/yaml.js';

/** YAML files larger than this are hashed but not parsed for image references. */
const MAX_PARSED_YAML = 4 << 20;

export interface InventoryLayer {
  index: number;
  digest: string;
  diffId: string;
  mediaType: string;
  size: number;
  /** The image history line for the layer (e.g. `COPY … # buildkit`). */
  createdBy?: string;
}

export interface InventoryFile {
  /** Path inside the image, without a leading `/`. */
  path: string;
  sha256: string;
  sha1: string;
  size: number;
  mode: number;
  /** Index into `layers` of the layer that holds it. */
  layer: number;
}

export interface InventoryDownload {
  url: string;
  /** sha256 of what was downloaded (the pin in bundle.yaml). */
  sha256: string;
  /** The archive member taken out of the download, if any. */
  extract?: string;
  /** Where it is in the image. */
  path: string;
  /** SPDX licence expression declared in bundle.yaml, if any. */
  license?: string;
}

export interface ReferencedChart {
  repo: string;
  chart: string;
  version?: string;
}

export interface InventoryManifest {
  /** Path of the manifest file inside the image. */
  path: string;
  /** `k3s`, `k0s`, or undefined when the path names neither. */
  distro?: string;
  /** Container image references (`image:` fields), sorted, unique. */
  images: string[];
  /** Helm charts (k3s HelmChart, k0s Chart). */
  charts: ReferencedChart[];
}

export interface ImageInventory {
  name: string;
  version: string;
  /** Bundle type (run, container, sysext, confext), when built from a bundle.yaml. */
  type?: string;
  description?: string;
  license?: string;
  source?: string;
  revision?: string;
  platform: string;
  manifest: Descriptor;
  config: string;
  /** SOURCE_DATE_EPOCH, as seconds. */
  epoch: number;
  layers: InventoryLayer[];
  files: InventoryFile[];
  downloads: InventoryDownload[];
  manifests: InventoryManifest[];
}

/** What the build knows about one image besides its bytes. */
export interface BuildFacts {
  name: string;
  version: string;
  type?: string;
  description?: string;
  license?: string;
  source?: string;
  revision?: string;
  epoch: number;
  downloads: InventoryDownload[];
  /** Defaults of `{{ placeholder }}` values, to render manifests before parsing them. */
  placeholders?: Record<string, string>;
  onWarning?: (msg: string) => void;
}

const PLACEHOLDER = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

function render(text: string, values: Record<string, string>): string {
  return text.replace(PLACEHOLDER, (m, k: string) => values[k] ?? m);
}

/** `image:` as a string, or Helm's `{registry, repository, tag|digest}` object. */
function imageRef(v: unknown): string | undefined {
  if (typeof v === 'string') return v.trim() || undefined;
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    if (typeof o.repository !== 'string' || !o.repository) return undefined;
    const repo = typeof o.registry === 'string' && o.registry ? `${o.registry}/${o.repository}` : o.repository;
    if (typeof o.digest === 'string' && o.digest) return `${repo}@${o.digest}`;
    if (typeof o.tag === 'string' && o.tag) return `${repo}:${o.tag}`;
    return repo;
  }
  return undefined;
}

function collectImages(node: unknown, out: Set<string>, depth = 0): void {
  if (depth > 64 || node === null || typeof node !== 'object') return;
  if (Array.isArray(node)) {
    for (const n of node) collectImages(n, out, depth + 1);
    return;
  }
  for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
    if (k === 'image') {
      const ref = imageRef(v);
      if (ref) out.add(ref);
      if (typeof v !== 'string') collectImages(v, out, depth + 1);
    } else collectImages(v, out, depth + 1);
  }
}

/** Container images and charts named by the Kubernetes objects of one YAML file; undefined when it holds none. */
export function parseKubernetesYaml(text: string, what: string): { images: string[]; charts: ReferencedChart[] } | undefined {
  const list = parseYamlDocuments(text, what, { maxBytes: MAX_PARSED_YAML, uniqueKeys: false });
  const images = new Set<string>();
  const charts: ReferencedChart[] = [];
  let objects = 0;
  for (const obj of list) {
    if (!obj || typeof obj !== 'object' || Array.isArray(obj)) continue;
    const o = obj as Record<string, unknown>;
    if (typeof o.apiVersion !== 'string' || typeof o.kind !== 'string') continue;
    objects++;
    collectImages(o, images);
    const spec = (o.spec ?? {}) as Record<string, unknown>;
    // k3s helm-controller HelmChart: repo + chart + version, values in valuesContent.
    if (o.kind === 'HelmChart' && typeof spec.chart === 'string') {
      charts.push({ repo: typeof spec.repo === 'string' ? spec.repo : '', chart: spec.chart, version: typeof spec.version === 'string' ? spec.version : undefined });
      if (typeof spec.valuesContent === 'string') collectValueImages(spec.valuesContent, images);
    }
    // k0s helm extension Chart: chartName `<repo name>/<chart>` or an oci:// reference.
    if (o.kind === 'Chart' && typeof spec.chartName === 'string') {
      const i = spec.chartName.lastIndexOf('/');
      charts.push({ repo: i > 0 ? spec.chartName.slice(0, i) : '', chart: i > 0 ? spec.chartName.slice(i + 1) : spec.chartName, version: typeof spec.version === 'string' ? spec.version : undefined });
      if (typeof spec.values === 'string') collectValueImages(spec.values, images);
    }
  }
  if (objects === 0) return undefined;
  return { images: [...images].sort(), charts };
}

/** Helm values embedded as a YAML string: their `image:` entries are what the chart will run. */
function collectValueImages(values: string, out: Set<string>): void {
  try {
    for (const d of parseYamlDocuments(values, 'values', { maxBytes: MAX_PARSED_YAML, uniqueKeys: false })) collectImages(d, out);
  } catch {
    /* values that are not YAML name no images */
  }
}

function distroOf(path: string): string | undefined {
  const parts = path.split('/');
  return parts.find((p) => p === 'k3s' || p === 'k0s');
}

/** Hash every file of every layer of the platform image `manifest` in `target`, and join the build facts. */
export async function collectInventory(target: Target, manifest: Descriptor, platform: string, facts: BuildFacts): Promise<ImageInventory> {
  if (!isManifestMediaType(manifest.mediaType)) throw new UserError(`${target.name}@${manifest.digest}: ${manifest.mediaType} is not an image manifest`);
  const m = parseManifest(await fetchBytes(target, manifest), manifest.mediaType, `${target.name}@${manifest.digest}`);
  const config = parseJson(ImageConfigSchema, await fetchBytes(target, m.config), `${target.name}@${m.config.digest}`);
  const diffIds = config.rootfs.diff_ids;
  const history = (config.history ?? []).filter((h) => !h.empty_layer);
  const layers: InventoryLayer[] = m.layers.map((l, index) => ({
    index,
    digest: l.digest,
    diffId: diffIds[index] ?? l.digest,
    mediaType: l.mediaType,
    size: l.size,
    ...(history[index]?.created_by ? { createdBy: history[index]!.created_by } : {}),
  }));

  // Later layers win for a path (what an extracted image holds); whiteouts do not occur in kbundle builds.
  const files = new Map<string, InventoryFile>();
  const yaml = new Map<string, Buffer>();
  for (const layer of layers) {
    const what = `${target.name}@${layer.digest}`;
    for await (const { header, chunks } of readTar(decompress(await target.fetch(m.layers[layer.index]!), layer.mediaType, what), what)) {
      const path = posix.normalize(header.name.replace(/^(\.\/)+/, '').replace(/^\/+/, '')).replace(/\/+$/, '');
      if (header.type !== 'file' && header.type !== 'contiguous-file') continue;
      const sha256 = createHash('sha256');
      const sha1 = createHash('sha1');
      const keep = /\.ya?ml$/i.test(path) && (header.size ?? 0) <= MAX_PARSED_YAML;
      const kept: Buffer[] = [];
      let size = 0;
      for await (const chunk of chunks) {
        sha256.update(chunk);
        sha1.update(chunk);
        size += chunk.length;
        if (keep) kept.push(chunk);
      }
      files.set(path, { path, sha256: sha256.digest('hex'), sha1: sha1.digest('hex'), size, mode: (header.mode ?? 0o644) & 0o7777, layer: layer.index });
      if (keep)
        yaml.set(path, Buffer.concat(kept)); // a copy: the chunks are views of the layer's
      else yaml.delete(path);
    }
  }

  const manifests: InventoryManifest[] = [];
  for (const [path, bytes] of [...yaml].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    let parsed;
    try {
      parsed = parseKubernetesYaml(render(bytes.toString('utf8'), facts.placeholders ?? {}), path);
    } catch (e) {
      // A YAML file that is not Kubernetes objects is just a file; one under manifests/ is worth a word.
      if (/(^|\/)manifests\//.test(path)) facts.onWarning?.(`sbom: ${path}: ${errorMessage(e)}; its image references are not listed`);
      continue;
    }
    if (parsed) manifests.push({ path, distro: distroOf(path), ...parsed });
  }

  const sorted = [...files.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const downloads = facts.downloads.filter((d) => files.has(d.path)).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return {
    name: facts.name,
    version: facts.version,
    type: facts.type,
    description: facts.description,
    license: facts.license,
    source: facts.source,
    revision: facts.revision,
    platform,
    manifest: { mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.size },
    config: m.config.digest,
    epoch: facts.epoch,
    layers,
    files: sorted,
    downloads,
    manifests,
  };
}
