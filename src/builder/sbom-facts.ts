import type { BuildFacts, InventoryDownload } from '../sbom/index.js';
import type { LoadedSpec } from './spec.js';

/** Build facts of a bundle.yaml build for one platform. */
export function factsFromSpec(loaded: LoadedSpec, platform: string, epoch: number, revision?: string, onWarning?: (m: string) => void): BuildFacts {
  const { spec } = loaded;
  const downloads: InventoryDownload[] = [...spec.files, ...(spec.platform_files[platform] ?? [])]
    .filter((f) => f.url)
    .map((f) => ({ url: f.url!, sha256: f.sha256!, path: f.dst.replace(/^\/+/, '').replace(/\/+$/, ''), ...(f.extract ? { extract: f.extract } : {}), ...(f.license ? { license: f.license } : {}) }));
  return {
    name: spec.name,
    version: spec.version,
    type: spec.type,
    description: spec.description,
    license: spec.license,
    source: spec.source,
    revision,
    epoch,
    downloads,
    placeholders: spec.config.values,
    onWarning,
  };
}
