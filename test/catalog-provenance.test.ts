/**
 * `catalog publish --attest` on the real registry:2: every published bundle gets a signed SBOM per
 * platform image and a SLSA v1 provenance (builder id, source repository and commit from git, the
 * bundle.yaml digest, every pinned download), found and verified by `verify-attestation`; a
 * republish of what did not change signs and adds nothing; a changed bundle gets its own.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attachmentTag, referrersTag } from '../src/attach/tags.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { CATALOG_BUILD_TYPE, normaliseRepositoryUrl, provenanceContext, provenancePredicate, type ProvenanceFacts } from '../src/catalog/provenance.js';
import { copyCatalogOffline, type FixtureServer } from './helpers/catalog-copy.js';
import { kbundleAsync, type CliResult } from './helpers/cli.js';
import { cleanupTempDirs, mustRun, run, tempDir } from './helpers/exec.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';

const BUILDER = 'https://github.com/example/catalog/.github/workflows/catalog.yml';
const ORIGIN = 'https://github.com/example/catalog.git';

/** This process's environment without CI variables that would leak into the provenance. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('GITHUB_') && !k.startsWith('ACTIONS_') && k !== 'KBUNDLE_BUILDER_ID' && k !== 'SIGSTORE_ID_TOKEN') env[k] = v;
  return { ...env, KBUNDLE_PASSWORD: '', KBUNDLE_CACHE_DIR: cacheDir, ...extra };
}

let reg: RegistryHandle;
let server: FixtureServer;
let repo: string;
let catalog: string;
let cacheDir: string;
let keys: string;
let commit: string;

const cli = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> => kbundleAsync(args, { env: cleanEnv(env) });

async function ok(p: Promise<CliResult>): Promise<CliResult> {
  const r = await p;
  if (r.code !== 0) throw new Error(`kbundle exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r;
}

function git(args: string[]): string {
  return mustRun('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@example.invalid', '-c', 'commit.gpgsign=false', ...args]).trim();
}

function skopeoRaw(ref: string): Record<string, unknown[]> {
  return JSON.parse(mustRun('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`])) as Record<string, unknown[]>;
}

/** How many `.att` layers and referrers the digest has in the registry. */
function attached(repository: string, digest: string): { att: number; referrers: number } {
  return { att: skopeoRaw(`${repository}:${attachmentTag(digest, 'att')}`).layers!.length, referrers: skopeoRaw(`${repository}:${referrersTag(digest)}`).manifests!.length };
}

type Statement = { subject: { name: string; digest: { sha256: string }; annotations?: Record<string, string> }[]; predicate: Record<string, any> };
type Verified = { attestations: { format: string; keyFingerprint?: string; statement: Statement }[] };
type Published = { name: string; version: string; digest: string; status: string; attestations?: { predicateType: string; platform?: string; format: string; added: boolean }[] };

beforeAll(async () => {
  reg = await startRegistry({ variant: 'open' });
  repo = tempDir();
  catalog = join(repo, 'bundles');
  cacheDir = tempDir();
  server = await copyCatalogOffline(catalog);
  git(['init', '-q', '-b', 'main']);
  git(['remote', 'add', 'origin', ORIGIN]);
  git(['add', '-A']);
  git(['commit', '-q', '-m', 'catalog']);
  commit = git(['rev-parse', 'HEAD']);
  keys = tempDir();
  await ok(cli(['key', 'generate', '--out', join(keys, 'cat')]));
});
afterAll(async () => {
  await reg.stop();
  await server.close();
  cleanupTempDirs();
});

describe('catalog publish --attest', () => {
  it('attaches SBOMs and a SLSA provenance that verify, republishes without duplicates, attests a changed bundle anew', async () => {
    const layout = join(tempDir(), 'oci');
    const sbomDir = tempDir();
    await ok(cli(['catalog', 'build', '-C', catalog, '-o', `oci:${layout}`, '--bundle', 'k9s', 'metallb', '--sbom', 'spdx', '--sbom-dir', sbomDir]));
    const ns = `${reg.host}/kairos`;
    const publish = (extra: string[] = []) =>
      ok(cli(['catalog', 'publish', '--registry', ns, '--layout', layout, '--sign', '--attest', '--builder-id', BUILDER, '--key', join(keys, 'cat.key'), '--json', ...extra]));
    const first = JSON.parse((await publish()).stdout).bundles as Published[];
    expect(first.map((b) => b.name)).toEqual(['k9s', 'metallb']);
    for (const b of first) {
      expect(b.status).toBe('pushed');
      // Two platform SBOMs and one provenance, each in both cosign layouts.
      expect(b.attestations!.filter((a) => a.added)).toHaveLength(6);
      expect(
        b
          .attestations!.filter((a) => a.predicateType === 'https://spdx.dev/Document')
          .map((a) => `${a.platform} ${a.format}`)
          .sort(),
      ).toEqual(['linux/amd64 bundle', 'linux/amd64 legacy', 'linux/arm64 bundle', 'linux/arm64 legacy']);
    }
    const k9s = first.find((b) => b.name === 'k9s')!;
    const ref = `${ns}/k9s:${k9s.version}`;
    const index = skopeoRaw(ref) as unknown as { manifests: { digest: string; platform: { architecture: string } }[] };
    const platformDigest = (arch: string) => index.manifests.find((m) => m.platform.architecture === arch)!.digest;

    // The provenance verifies with the publishing key and names the builder, the source and every input.
    const prov = JSON.parse((await ok(cli(['verify-attestation', ref, '--type', 'slsaprovenance1', '--key', join(keys, 'cat.pub'), '--builder-id', BUILDER, '--json']))).stdout) as Verified;
    expect(prov.attestations.map((a) => a.format).sort()).toEqual(['bundle', 'legacy']);
    const st = prov.attestations[0]!.statement;
    expect(st.subject).toEqual([
      { name: `${ns}/k9s`, digest: { sha256: k9s.digest.slice(7) } },
      { name: `${ns}/k9s`, digest: { sha256: platformDigest('amd64').slice(7) }, annotations: { 'org.opencontainers.image.platform': 'linux/amd64' } },
      { name: `${ns}/k9s`, digest: { sha256: platformDigest('arm64').slice(7) }, annotations: { 'org.opencontainers.image.platform': 'linux/arm64' } },
    ]);
    const p = st.predicate;
    expect(p.buildDefinition.buildType).toBe(CATALOG_BUILD_TYPE);
    expect(p.buildDefinition.externalParameters).toEqual({ bundle: 'bundles/k9s', name: 'k9s', version: k9s.version, source: { repository: 'https://github.com/example/catalog', commit } });
    expect(p.buildDefinition.internalParameters).toEqual({ platforms: ['linux/amd64', 'linux/arm64'], sourceDateEpoch: 0 });
    expect(p.runDetails.builder).toEqual({ id: BUILDER, version: { kbundle: '0.1.0' } });
    const specBytes = readFileSync(join(catalog, 'k9s/bundle.yaml'));
    const spec = parseYaml(specBytes.toString()) as { platform_files: Record<string, { url: string; sha256: string; extract: string; dst: string }[]> };
    const gitUri = `git+https://github.com/example/catalog@${commit}`;
    expect(p.buildDefinition.resolvedDependencies).toEqual([
      { uri: gitUri, digest: { gitCommit: commit } },
      { name: 'bundle.yaml', uri: `${gitUri}#bundles/k9s/bundle.yaml`, digest: { sha256: createHash('sha256').update(specBytes).digest('hex') } },
      ...['linux/amd64', 'linux/arm64'].map((platform) => {
        const f = spec.platform_files[platform]![0]!;
        expect(f.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\//);
        return { uri: f.url, digest: { sha256: f.sha256 }, annotations: { dst: f.dst, extract: f.extract, platforms: [platform] } };
      }),
    ]);

    // The SBOMs verify too, one per platform, and are the documents `catalog build --sbom` wrote.
    const sboms = JSON.parse((await ok(cli(['verify-attestation', ref, '--type', 'spdxjson', '--key', join(keys, 'cat.pub'), '--json']))).stdout) as Verified;
    expect(sboms.attestations).toHaveLength(4);
    for (const a of sboms.attestations) {
      const platform = a.statement.subject[1]!.annotations!['org.opencontainers.image.platform']!;
      expect(a.statement.subject[1]!.digest.sha256).toBe(platformDigest(platform.split('/')[1]!).slice(7));
      const written = JSON.parse(readFileSync(join(sbomDir, `k9s_${k9s.version}.${platform.replace('/', '-')}.spdx.json`), 'utf8'));
      expect(a.statement.predicate).toEqual(written);
      expect(JSON.stringify(a.statement.predicate)).toContain(spec.platform_files[platform]![0]!.url);
    }
    // Another key does not verify them.
    await ok(cli(['key', 'generate', '--out', join(keys, 'other')]));
    const other = await cli(['verify-attestation', ref, '--type', 'slsaprovenance1', '--key', join(keys, 'other.pub')]);
    expect(other.code).not.toBe(0);
    expect(other.stderr).toContain('not signed by');

    // Republishing the same build: nothing pushed, signed or attached.
    const before = { k9s: attached(`${ns}/k9s`, k9s.digest), metallb: attached(`${ns}/metallb`, first[1]!.digest) };
    expect(before.k9s).toEqual({ att: 3, referrers: 4 }); // 3 attestations + the image signature's bundle
    const again = JSON.parse((await publish()).stdout).bundles as Published[];
    for (const b of again) {
      expect(b.status).toBe('unchanged');
      expect(b.attestations!.length).toBe(6);
      expect(b.attestations!.every((a) => !a.added)).toBe(true);
    }
    expect({ k9s: attached(`${ns}/k9s`, k9s.digest), metallb: attached(`${ns}/metallb`, first[1]!.digest) }).toEqual(before);

    // A new SBOM format is a new attestation type: only it is added; the provenance stays as it is.
    const cdx = JSON.parse((await publish(['--sbom-format', 'cyclonedx', '--bundle', 'k9s'])).stdout).bundles as Published[];
    expect(cdx[0]!.attestations!.filter((a) => a.added).map((a) => a.predicateType)).toEqual(Array(4).fill('https://cyclonedx.org/bom'));
    expect(attached(`${ns}/k9s`, k9s.digest)).toEqual({ att: 5, referrers: 6 });
    const boms = JSON.parse((await ok(cli(['verify-attestation', ref, '--type', 'cyclonedx', '--key', join(keys, 'cat.pub'), '--json']))).stdout) as Verified;
    expect(boms.attestations.map((a) => a.statement.predicate.bomFormat)).toEqual(Array(4).fill('CycloneDX'));

    // A changed bundle is a new digest with its own attestations, from the new commit.
    const specFile = join(catalog, 'k9s/bundle.yaml');
    writeFileSync(specFile, readFileSync(specFile, 'utf8').replace('"description": "', '"description": "Edited: '));
    git(['commit', '-q', '-am', 'edit k9s']);
    const commit2 = git(['rev-parse', 'HEAD']);
    await ok(cli(['catalog', 'build', '-C', catalog, '-o', `oci:${layout}`, '--bundle', 'k9s', 'metallb']));
    const third = JSON.parse((await publish()).stdout).bundles as Published[];
    const k9s2 = third.find((b) => b.name === 'k9s')!;
    expect(k9s2.status).toBe('pushed');
    expect(k9s2.digest).not.toBe(k9s.digest);
    expect(k9s2.attestations!.filter((a) => a.added)).toHaveLength(6);
    expect(third.find((b) => b.name === 'metallb')!.attestations!.every((a) => !a.added)).toBe(true);
    const prov2 = JSON.parse((await ok(cli(['verify-attestation', `${ns}/k9s:latest`, '--type', 'slsaprovenance1', '--key', join(keys, 'cat.pub'), '--json']))).stdout) as Verified;
    expect(prov2.attestations[0]!.statement.predicate.buildDefinition.externalParameters.source.commit).toBe(commit2);
    expect(prov2.attestations[0]!.statement.subject[0]!.digest.sha256).toBe(k9s2.digest.slice(7));
  });

  it('refuses before pushing anything: no builder id, a bad source commit, provenance flags without --attest', async () => {
    const layout = join(tempDir(), 'oci');
    await ok(cli(['catalog', 'build', '-C', catalog, '-o', `oci:${layout}`, '--bundle', 'metallb']));
    const ns = `${reg.host}/refused`;
    const base = ['catalog', 'publish', '--registry', ns, '--layout', layout, '--key', join(keys, 'cat.key')];
    const noBuilder = await cli([...base, '--attest']);
    expect(noBuilder.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(noBuilder.stderr).toContain('the provenance needs a builder id');
    const badCommit = await cli([...base, '--attest', '--builder-id', BUILDER, '--source-commit', 'main']);
    expect(badCommit.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(badCommit.stderr).toContain('--source-commit: "main" is not a full git commit hash');
    const badBuilder = await cli([...base, '--attest', '--builder-id', 'my laptop']);
    expect(badBuilder.stderr).toContain('is not a URI');
    const noAttest = await cli([...base, '--builder-id', BUILDER]);
    expect(noAttest.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(noAttest.stderr).toContain('describe the provenance of --attest');
    expect(run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ns}/metallb:latest`]).code).not.toBe(0);
  });
});

describe('provenance predicate', () => {
  const facts: ProvenanceFacts = {
    path: 'bundles/x',
    specDigest: `sha256:${'a'.repeat(64)}`,
    platforms: ['linux/amd64'],
    sourceDateEpoch: 5,
    downloads: [{ url: 'https://example.com/x.tgz', sha256: 'b'.repeat(64), dst: 'usr/bin/x', extract: 'x', platforms: ['linux/amd64'], signature: 'key keys/up.pub' }],
    source: { repository: 'https://github.com/o/recorded', commit: 'c'.repeat(40), dirty: true },
    kbundleVersion: '0.1.0',
    sbom: {},
  };

  it('takes flags over what the build recorded over the GitHub Actions environment, and reads the builder from the workflow', () => {
    const gha = {
      GITHUB_SERVER_URL: 'https://github.com',
      GITHUB_REPOSITORY: 'o/env',
      GITHUB_SHA: 'd'.repeat(40),
      GITHUB_REF: 'refs/heads/main',
      GITHUB_WORKFLOW_REF: 'o/env/.github/workflows/catalog.yml@refs/heads/main',
      GITHUB_RUN_ID: '42',
      GITHUB_RUN_ATTEMPT: '2',
    };
    const ctx = provenanceContext({}, gha);
    expect(ctx.builderId).toBe('https://github.com/o/env/.github/workflows/catalog.yml');
    const p = provenancePredicate({ name: 'x', version: '1' }, facts, ctx) as Record<string, any>;
    expect(p.buildDefinition.externalParameters.source).toEqual({ repository: 'https://github.com/o/recorded', commit: 'c'.repeat(40), ref: 'refs/heads/main', uncommittedChanges: true });
    expect(p.runDetails.metadata).toEqual({ invocationId: 'https://github.com/o/env/actions/runs/42/attempts/2' });
    expect(p.buildDefinition.resolvedDependencies[2]).toEqual({
      uri: 'https://example.com/x.tgz',
      digest: { sha256: 'b'.repeat(64) },
      annotations: { dst: 'usr/bin/x', extract: 'x', platforms: ['linux/amd64'], signature: 'key keys/up.pub' },
    });
    // Nothing recorded: the environment.
    const bare = provenancePredicate({ name: 'x', version: '1' }, { ...facts, source: {} }, ctx) as Record<string, any>;
    expect(bare.buildDefinition.externalParameters.source).toMatchObject({ repository: 'https://github.com/o/env', commit: 'd'.repeat(40) });
    // Flags win over both.
    const flagged = provenancePredicate(
      { name: 'x', version: '1' },
      facts,
      provenanceContext({ builderId: 'https://b.example/x', sourceRepo: 'git@gitlab.com:g/r.git', sourceCommit: 'e'.repeat(40) }, gha),
    ) as Record<string, any>;
    expect(flagged.buildDefinition.externalParameters.source).toEqual({ repository: 'https://gitlab.com/g/r', commit: 'e'.repeat(40), ref: 'refs/heads/main' });
    expect(flagged.runDetails.builder.id).toBe('https://b.example/x');
    // Without git or a repository: the bundle.yaml by path.
    const local = provenancePredicate({ name: 'x', version: '1' }, { ...facts, source: {} }, provenanceContext({ builderId: 'https://b.example/x' }, {})) as Record<string, any>;
    expect(local.buildDefinition.resolvedDependencies[0]).toEqual({ name: 'bundle.yaml', uri: 'file:bundles/x/bundle.yaml', digest: { sha256: 'a'.repeat(64) } });
  });

  it('never records credentials of a remote URL', () => {
    expect(normaliseRepositoryUrl('https://x-access-token:secret@github.com/o/r.git')).toBe('https://github.com/o/r');
    expect(normaliseRepositoryUrl('ssh://git@github.com:22/o/r.git')).toBe('https://github.com/o/r');
    expect(normaliseRepositoryUrl('git@github.com:o/r.git')).toBe('https://github.com/o/r');
  });
});
