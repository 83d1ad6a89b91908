/** Small pieces both SBOM formats use: deterministic identifiers, image references as purls. */
import { createHash } from 'node:crypto';
import { parseDigest } from '../oci/digest.js';

export const TOOL_NAME = 'kbundle';
export { VERSION as TOOL_VERSION } from '../version.js';

/** RFC 3339 UTC without fractions, from SOURCE_DATE_EPOCH seconds. */
export function epochTime(epoch: number): string {
  return new Date(epoch * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * A UUID (RFC 4122 layout, version 5 bits) derived from `parts`: the same image always gets the
 * same document namespace / serial number, so SBOMs are byte-reproducible.
 */
export function stableUuid(...parts: string[]): string {
  const h = createHash('sha256').update(parts.join('\0')).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

export function hexOf(digest: string): string {
  return parseDigest(digest).hex;
}

/** `pkg:oci/<name>@sha256%3A<hex>?arch=…` (purl-spec oci type) for a built image. */
export function ociPurl(name: string, digest: string, platform: string): string {
  const [os, arch, variant] = platform.split('/');
  const q = [`arch=${encodeURIComponent(arch ?? '')}`, `os=${encodeURIComponent(os ?? '')}`];
  if (variant) q.push(`variant=${encodeURIComponent(variant)}`);
  return `pkg:oci/${encodeURIComponent(name)}@${encodeURIComponent(digest)}?${q.join('&')}`;
}

export interface ParsedImageRef {
  registry?: string;
  path: string;
  tag?: string;
  digest?: string;
}

/** `registry/path:tag@digest` as Docker reads it (first segment is a registry when it has `.`/`:` or is localhost). */
export function parseImageRef(ref: string): ParsedImageRef {
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  const slash = rest.indexOf('/');
  const first = slash >= 0 ? rest.slice(0, slash) : '';
  if (first && (first.includes('.') || first.includes(':') || first === 'localhost')) return { registry: first, path: rest.slice(slash + 1), tag, digest };
  return { path: rest, tag, digest };
}

/** purl-spec `docker` type for an image a manifest references. */
export function dockerPurl(ref: string): string | undefined {
  const r = parseImageRef(ref);
  if (!r.path || /\s/.test(ref)) return undefined;
  const registry = r.registry && r.registry !== 'docker.io' && r.registry !== 'index.docker.io' ? r.registry : undefined;
  const version = r.digest ?? r.tag;
  const path = r.path.split('/').map(encodeURIComponent).join('/');
  return `pkg:docker/${path}${version ? `@${encodeURIComponent(version)}` : ''}${registry ? `?repository_url=${encodeURIComponent(registry)}` : ''}`;
}

/** The name a download goes by: the last path segment of its URL. */
export function downloadName(url: string): string {
  try {
    const p = new URL(url).pathname.split('/').filter(Boolean);
    return decodeURIComponent(p[p.length - 1] ?? url);
  } catch {
    return url;
  }
}

/** Image references, in order of first appearance across all manifests, each once. */
export function uniqueInOrder<T>(items: T[]): T[] {
  return [...new Set(items)];
}

export interface ChartRef {
  repo: string;
  chart: string;
  version?: string;
}

/**
 * Charts named by the manifests, each once per chart and version: the k3s HelmChart names the
 * repository URL, the k0s Chart only the repository's name in k0s.yaml, so the URL wins.
 */
export function uniqueCharts(charts: ChartRef[]): { list: ChartRef[]; indexOf: (c: ChartRef) => number } {
  const key = (c: ChartRef) => `${c.chart}\0${c.version ?? ''}`;
  const byKey = new Map<string, ChartRef>();
  const isUrl = (r: string) => /^(https?|oci):\/\//.test(r);
  for (const c of charts) {
    const prev = byKey.get(key(c));
    if (!prev || (!isUrl(prev.repo) && isUrl(c.repo))) byKey.set(key(c), { ...c });
  }
  const keys = [...byKey.keys()];
  return { list: [...byKey.values()], indexOf: (c) => keys.indexOf(key(c)) };
}
