/**
 * What a catalog build records for its provenance (in the layout's catalog state, so publish can
 * attest without the source folder), and the SLSA v1 provenance predicate made from it: which
 * bundle folder at which commit of which repository, the bundle.yaml digest, every pinned `url:`
 * download, and the builder that ran it. Build type documented in signing/signing.md#catalog-provenance.
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFile, realpath } from 'node:fs/promises';
import { relative, resolve, sep } from 'node:path';
import { UserError } from '../errors.js';
import type { BuildPlan } from '../builder/builder.js';
import type { FileSpec } from '../builder/spec.js';
import { factsFromSpec } from '../builder/sbom-facts.js';
import type { BuildFacts } from '../sbom/inventory.js';
import { TOOL_VERSION } from '../sbom/common.js';

/** `buildDefinition.buildType` of kbundle catalog builds (documented in signing/signing.md). */
export const CATALOG_BUILD_TYPE = 'https://github.com/kairos-io/kbundle/blob/main/signing/signing.md#catalog-build-v1';

export interface ProvenanceDownload {
  url: string;
  sha256: string;
  /** Where it went in the image, and the archive member taken out of it. */
  dst: string;
  extract?: string;
  /** Platforms that took it (all of them for `files:`). */
  platforms: string[];
  /** How its signature was checked at build time (`signature:` in bundle.yaml), if it had one. */
  signature?: string;
}

export interface GitSource {
  /** https URL of the repository (credentials removed), when it has an `origin` remote. */
  repository?: string;
  commit?: string;
  /** The bundle folder had uncommitted changes when it was built. */
  dirty?: boolean;
}

export interface ProvenanceFacts {
  /** The bundle folder, relative to the repository top (outside git: to the catalog folder's parent). */
  path: string;
  /** sha256 of bundle.yaml as built. */
  specDigest: string;
  platforms: string[];
  sourceDateEpoch: number;
  downloads: ProvenanceDownload[];
  source: GitSource;
  kbundleVersion: string;
  /** Per platform: what the SBOM of that platform image needs besides the image itself. */
  sbom: Record<string, Omit<BuildFacts, 'onWarning'>>;
}

function git(dir: string, args: string[]): string | undefined {
  const r = spawnSync('git', ['-C', dir, ...args], { encoding: 'utf8', timeout: 30_000 });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** `git@github.com:o/r.git`, `https://user:token@host/o/r.git` → `https://host/o/r`; other URLs as they are, without credentials. */
export function normaliseRepositoryUrl(url: string): string {
  const scp = /^[\w.-]+@([\w.-]+):(.+?)(\.git)?\/?$/.exec(url);
  if (scp) return `https://${scp[1]}/${scp[2]}`;
  try {
    const u = new URL(url);
    // ssh:// and git:// clone URLs name the same repository as https:// on the same host.
    const base = u.protocol === 'ssh:' || u.protocol === 'git:' || u.protocol === 'git+ssh:' ? `https://${u.hostname}` : `${u.protocol}//${u.host}`;
    return `${base}${u.pathname}`.replace(/\.git\/?$/, '').replace(/\/$/, '');
  } catch {
    return url;
  }
}

export interface GitCheckout {
  top?: string;
  repository?: string;
  commit?: string;
  /** Paths (relative to top) with uncommitted changes. */
  changed: string[];
}

/** The git checkout holding `dir`, if any: its top, origin URL, HEAD commit and uncommitted paths. */
export function gitCheckout(dir: string): GitCheckout {
  const top = git(dir, ['rev-parse', '--show-toplevel']);
  if (!top) return { changed: [] };
  const origin = git(dir, ['remote', 'get-url', 'origin']);
  const status = git(top, ['status', '--porcelain', '--untracked-files=all']) ?? '';
  const changed = status
    .split('\n')
    .filter(Boolean)
    .map((l) => l.slice(3).replace(/^.* -> /, ''));
  return { top, repository: origin ? normaliseRepositoryUrl(origin) : undefined, commit: git(dir, ['rev-parse', '--verify', 'HEAD']), changed };
}

function describeSignature(f: FileSpec): string | undefined {
  const s = f.signature;
  if (!s) return undefined;
  if (s.key) return `key ${s.key}`;
  return `keyless ${s['certificate-identity'] ?? `/${s['certificate-identity-regexp']}/`} (issuer ${s['certificate-oidc-issuer'] ?? `/${s['certificate-oidc-issuer-regexp']}/`})`;
}

/** The provenance facts of one planned bundle build. */
export async function provenanceFacts(plan: BuildPlan, checkout: GitCheckout, base: string, sourceDateEpoch: number, revision?: string): Promise<ProvenanceFacts> {
  const { loaded } = plan;
  const specBytes = await readFile(resolve(loaded.dir, 'bundle.yaml'));
  const platforms = plan.plans.map((p) => p.platform);
  const downloads = new Map<string, ProvenanceDownload>();
  for (const platform of platforms) {
    for (const f of [...loaded.spec.files, ...(loaded.spec.platform_files[platform] ?? [])]) {
      if (!f.url) continue;
      const key = `${f.url}\0${f.sha256}\0${f.dst}\0${f.extract ?? ''}`;
      const d = downloads.get(key);
      if (d) d.platforms.push(platform);
      else
        downloads.set(key, {
          url: f.url,
          sha256: f.sha256!,
          dst: f.dst,
          ...(f.extract ? { extract: f.extract } : {}),
          platforms: [platform],
          ...(f.signature ? { signature: describeSignature(f) } : {}),
        });
    }
  }
  // git prints its top with symlinks resolved; compare real paths.
  const path = relative(await realpath(base), await realpath(loaded.dir))
    .split(sep)
    .join('/');
  const dirty = checkout.changed.some((c) => c === path || c.startsWith(`${path}/`));
  const sbom: ProvenanceFacts['sbom'] = {};
  for (const p of platforms) {
    const { onWarning: _drop, ...facts } = factsFromSpec(loaded, p, sourceDateEpoch, revision);
    sbom[p] = facts;
  }
  return {
    path,
    specDigest: `sha256:${createHash('sha256').update(specBytes).digest('hex')}`,
    platforms,
    sourceDateEpoch,
    downloads: [...downloads.values()],
    source: { ...(checkout.repository ? { repository: checkout.repository } : {}), ...(checkout.commit ? { commit: checkout.commit } : {}), ...(dirty ? { dirty } : {}) },
    kbundleVersion: TOOL_VERSION,
    sbom,
  };
}

/** Who built it and from where, as publish is told (flags, then what the build recorded, then the CI environment). */
export interface ProvenanceContext {
  builderId: string;
  /** Overrides of the recorded source. */
  repository?: string;
  commit?: string;
  /** e.g. `refs/heads/main` (GITHUB_REF). */
  ref?: string;
  /** URL of the CI run (GitHub Actions: …/actions/runs/<id>/attempts/<n>). */
  invocationId?: string;
  /** Environment fallbacks for repository and commit (GITHUB_SERVER_URL/GITHUB_REPOSITORY, GITHUB_SHA). */
  envRepository?: string;
  envCommit?: string;
}

/**
 * The provenance context from flags and a CI environment: `--builder-id` or KBUNDLE_BUILDER_ID,
 * else in GitHub Actions the workflow file (`$GITHUB_SERVER_URL/$GITHUB_WORKFLOW_REF` without `@ref`).
 */
export function provenanceContext(flags: { builderId?: string; sourceRepo?: string; sourceCommit?: string }, env: NodeJS.ProcessEnv): ProvenanceContext {
  const server = env.GITHUB_SERVER_URL || 'https://github.com';
  let builderId = flags.builderId ?? env.KBUNDLE_BUILDER_ID;
  if (!builderId && env.GITHUB_WORKFLOW_REF) builderId = `${server}/${env.GITHUB_WORKFLOW_REF.replace(/@.*$/, '')}`;
  if (!builderId) throw new UserError('--attest: the provenance needs a builder id', 'give --builder-id <uri> (or KBUNDLE_BUILDER_ID), e.g. the URL of the CI workflow that publishes');
  try {
    new URL(builderId);
  } catch {
    throw new UserError(`--builder-id: "${builderId}" is not a URI`, 'SLSA builder ids are URIs, e.g. https://github.com/<org>/<repo>/.github/workflows/catalog.yml');
  }
  if (flags.sourceCommit !== undefined && !/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(flags.sourceCommit)) throw new UserError(`--source-commit: "${flags.sourceCommit}" is not a full git commit hash`);
  const run = env.GITHUB_RUN_ID && env.GITHUB_REPOSITORY ? `${server}/${env.GITHUB_REPOSITORY}/actions/runs/${env.GITHUB_RUN_ID}/attempts/${env.GITHUB_RUN_ATTEMPT || '1'}` : undefined;
  return {
    builderId,
    ...(flags.sourceRepo ? { repository: normaliseRepositoryUrl(flags.sourceRepo) } : {}),
    ...(flags.sourceCommit ? { commit: flags.sourceCommit } : {}),
    ...(env.GITHUB_REF ? { ref: env.GITHUB_REF } : {}),
    ...(run ? { invocationId: run } : {}),
    ...(env.GITHUB_REPOSITORY ? { envRepository: `${server}/${env.GITHUB_REPOSITORY}` } : {}),
    ...(env.GITHUB_SHA ? { envCommit: env.GITHUB_SHA } : {}),
  };
}

type ResourceDescriptor = { name?: string; uri?: string; digest?: Record<string, string>; annotations?: Record<string, unknown> };

const hex = (d: string) => d.replace(/^sha256:/, '');

/**
 * The SLSA v1 provenance predicate (https://slsa.dev/spec/v1.0/provenance) of one published bundle.
 * Deterministic: the same build and context give the same bytes (no wall-clock times).
 */
export function provenancePredicate(bundle: { name: string; version: string }, facts: ProvenanceFacts, ctx: ProvenanceContext): Record<string, unknown> {
  const repository = ctx.repository ?? facts.source.repository ?? ctx.envRepository;
  const commit = ctx.commit ?? facts.source.commit ?? ctx.envCommit;
  const gitUri = repository ? `git+${repository}${commit ? `@${commit}` : ''}` : undefined;
  const deps: ResourceDescriptor[] = [];
  if (gitUri && commit) deps.push({ uri: gitUri, digest: { gitCommit: commit } });
  deps.push({ name: 'bundle.yaml', uri: gitUri ? `${gitUri}#${facts.path}/bundle.yaml` : `file:${facts.path}/bundle.yaml`, digest: { sha256: hex(facts.specDigest) } });
  for (const d of facts.downloads) {
    const annotations: Record<string, unknown> = { dst: d.dst, platforms: d.platforms };
    if (d.extract) annotations.extract = d.extract;
    if (d.signature) annotations.signature = d.signature;
    deps.push({ uri: d.url, digest: { sha256: d.sha256 }, annotations });
  }
  const source: Record<string, unknown> = {};
  if (repository) source.repository = repository;
  if (commit) source.commit = commit;
  if (ctx.ref) source.ref = ctx.ref;
  if (facts.source.dirty && !ctx.commit) source.uncommittedChanges = true;
  return {
    buildDefinition: {
      buildType: CATALOG_BUILD_TYPE,
      externalParameters: { bundle: facts.path, name: bundle.name, version: bundle.version, source },
      internalParameters: { platforms: facts.platforms, sourceDateEpoch: facts.sourceDateEpoch },
      resolvedDependencies: deps,
    },
    runDetails: {
      builder: { id: ctx.builderId, version: { kbundle: facts.kbundleVersion } },
      metadata: ctx.invocationId ? { invocationId: ctx.invocationId } : {},
    },
  };
}
