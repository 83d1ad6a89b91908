/**
 * `kbundle attest` / `verify-attestation` on the real registry:2 (no referrers API: bundles are
 * found through the `sha256-<hex>` fallback index) and in OCI layouts: keyed and keyless (the
 * @sigstore/mock stand-in with a private trusted root), attest → push → copy → pull → verify,
 * cosign's layout read back with skopeo, trust policies that require a provenance, and every
 * bad input the issue lists.
 */
import { sign as cryptoSign } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundleFromJSON } from '@sigstore/bundle';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attestImage } from '../src/attest/attest.js';
import { PredicateTypes, predicateFromFile } from '../src/attest/predicate.js';
import { Annotations, attestationStatement, BUNDLE_V03_MEDIA_TYPE, DSSE_ENVELOPE_MEDIA_TYPE, dsseEnvelopeJson, INTOTO_PAYLOAD_TYPE, PREDICATE_TYPE_ANNOTATION } from '../src/attach/formats.js';
import { appendAttachedLayer } from '../src/attach/legacy.js';
import { attachReferrer, listReferrers } from '../src/attach/referrers.js';
import { attachmentTag, referrersTag } from '../src/attach/tags.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { digestOf } from '../src/oci/digest.js';
import { MediaType } from '../src/oci/mediatypes.js';
import { fetchBytes } from '../src/oci/target.js';
import { IndexSchema, ManifestSchema, type Descriptor } from '../src/oci/types.js';
import { loadPrivateKey } from '../src/sign/keys.js';
import { pushBundleReferrer } from '../src/sign/sign.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { verifyAttestations } from '../src/verify/attestations.js';
import { checkStatement, parseImageBundle, preAuthEncoding } from '../src/verify/evidence.js';
import { exactMatcher } from '../src/verify/identity.js';
import type { KeylessRequirement } from '../src/verify/requirements.js';
import { parseTrustedRoot } from '../src/verify/trust.js';
import { checkRequirement } from '../src/verify/verify.js';
import { kbundle, kbundleAsync, REPO_ROOT, type CliResult } from './helpers/cli.js';
import { cleanupTempDirs, mustRun, tempDir } from './helpers/exec.js';
import { CONTAINER_FILES, CONTAINER_SPEC, writeBundle } from './helpers/fixture-bundle.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';
import { startSigstoreStack, type SigstoreStack } from './helpers/sigstore-stack.js';

const PW = 'attest pw';
const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({ ...process.env, KBUNDLE_PASSWORD: PW, ...extra });
const ID = 'https://github.com/kairos-io/bundles/.github/workflows/release.yml@refs/heads/main';
const ISSUER = 'https://token.actions.githubusercontent.com';
const BUILDER = 'https://github.com/kairos-io/bundles/.github/workflows/release.yml';

let reg: RegistryHandle;
let stack: SigstoreStack;
let keys: string;
let provenanceFile: string;
let provenance: Record<string, unknown>;
let bundleDir: string;

function ok(r: CliResult): CliResult {
  if (r.code !== 0) throw new Error(`kbundle exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r;
}

/** A fresh layout holding the two-platform fixture bundle tagged `t` (and its SPDX SBOMs). */
function layout(variant = ''): { dir: string; sboms: { platform: string; image: string; path: string }[]; digest: string } {
  const b = variant ? writeBundle(join(tempDir(), 'b'), CONTAINER_SPEC, [...CONTAINER_FILES, { path: 'tree/variant.txt', content: variant }]) : bundleDir;
  const dir = join(tempDir(), 'oci');
  const r = JSON.parse(ok(kbundle(['build', b, '-o', `oci:${dir}:t`, '--sbom', 'spdx', '--sbom-dir', join(dir, '..', 'sbom'), '--json'])).stdout) as {
    digest: string;
    sboms: { platform: string; image: string; path: string }[];
  };
  return { dir, sboms: r.sboms, digest: r.digest };
}

function skopeoRaw(ref: string): string {
  return mustRun('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
}

/** A blob of an image as skopeo copies it into a dir: transport. */
function skopeoBlob(ref: string, digest: string): Buffer {
  const dir = tempDir();
  mustRun('skopeo', ['copy', '--src-tls-verify=false', `docker://${ref}`, `dir:${dir}`]);
  return readFileSync(join(dir, digest.slice(7)));
}

interface Verified {
  verified: boolean;
  digest: string;
  attestations: {
    format: string;
    location: string;
    kind: string;
    identity?: string;
    predicateType: string;
    statement: { subject: { name?: string; digest: Record<string, string> }[]; predicate: unknown; _type: string };
  }[];
  rejected: { reason: string }[];
}

function verifyKeyed(ref: string, type: string, extra: string[] = []): Verified {
  return JSON.parse(ok(kbundle(['verify-attestation', ref, '--type', type, '--key', join(keys, 'release.pub'), '--json', ...extra])).stdout) as Verified;
}

beforeAll(async () => {
  reg = await startRegistry({ variant: 'open' });
  stack = await startSigstoreStack();
  keys = tempDir();
  ok(kbundle(['key', 'generate', '--out', join(keys, 'release')], { env: env() }));
  ok(kbundle(['key', 'generate', '--out', join(keys, 'other')], { env: env() }));
  bundleDir = writeBundle(join(tempDir(), 'bundle'), CONTAINER_SPEC, CONTAINER_FILES);
  provenance = {
    buildDefinition: { buildType: 'https://kbundle.dev/build/v1', externalParameters: { bundle: 'demo-tools', version: '1.2.3' }, resolvedDependencies: [] },
    runDetails: { builder: { id: BUILDER }, metadata: { invocationId: 'run-1' } },
  };
  provenanceFile = join(keys, 'provenance.json');
  writeFileSync(provenanceFile, `${JSON.stringify(provenance, null, 2)}\n`);
});

afterAll(async () => {
  await reg?.stop();
  await stack?.stop();
  cleanupTempDirs();
});

describe('attest → push → copy → pull → verify-attestation', () => {
  it('keyed: both cosign layouts, travelling with push, copy and pull; per-platform SBOM attestations too', async () => {
    const { dir, sboms, digest } = layout();
    const a = JSON.parse(ok(kbundle(['attest', `oci:${dir}:t`, '--predicate', provenanceFile, '--type', 'slsaprovenance1', '--key', join(keys, 'release.key'), '--json'], { env: env() })).stdout) as {
      digest: string;
      predicateType: string;
      attestations: { format: string; location: string }[];
    };
    expect(a).toMatchObject({ digest, predicateType: 'https://slsa.dev/provenance/v1' });
    expect(a.attestations.map((x) => x.format)).toEqual(['legacy', 'bundle']);
    expect(a.attestations[0]!.location).toBe(attachmentTag(digest, 'att'));

    ok(kbundle(['push', `oci:${dir}:t`, `${reg.host}/kairos/att:v1`]));
    // The per-platform SBOM, attested on the pushed platform manifest by digest.
    const amd = sboms.find((s) => s.platform === 'linux/amd64')!;
    ok(kbundle(['attest', `${reg.host}/kairos/att@${amd.image}`, '--predicate', amd.path, '--type', 'spdxjson', '--key', join(keys, 'release.key')], { env: env() }));

    // cosign's legacy layout, read back by skopeo: one DSSE layer with cosign's annotations, the statement inside.
    const att = ManifestSchema.parse(JSON.parse(skopeoRaw(`${reg.host}/kairos/att:${attachmentTag(digest, 'att')}`)));
    expect(att.mediaType).toBe(MediaType.OciManifest);
    expect(att.layers).toHaveLength(1);
    expect(att.layers[0]).toMatchObject({ mediaType: DSSE_ENVELOPE_MEDIA_TYPE, annotations: { [PREDICATE_TYPE_ANNOTATION]: 'https://slsa.dev/provenance/v1', [Annotations.Signature]: '' } });
    expect(Object.keys(att.layers[0]!.annotations!).sort()).toEqual([Annotations.Signature, PREDICATE_TYPE_ANNOTATION].sort());
    const envelope = JSON.parse(skopeoBlob(`${reg.host}/kairos/att:${attachmentTag(digest, 'att')}`, att.layers[0]!.digest).toString()) as Record<string, any>;
    expect(Object.keys(envelope)).toEqual(['payload', 'payloadType', 'signatures']);
    expect(envelope.payloadType).toBe(INTOTO_PAYLOAD_TYPE);
    const statement = JSON.parse(Buffer.from(envelope.payload, 'base64').toString()) as Record<string, any>;
    // Attested in a layout: there is no repository to name, only the digest.
    expect(statement).toEqual({ _type: 'https://in-toto.io/Statement/v1', subject: [{ digest: { sha256: digest.slice(7) } }], predicateType: 'https://slsa.dev/provenance/v1', predicate: provenance });
    // The bundle referrer, found through the fallback index skopeo reads.
    const idx = IndexSchema.parse(JSON.parse(skopeoRaw(`${reg.host}/kairos/att:${referrersTag(digest)}`)));
    expect(idx.manifests).toEqual([
      expect.objectContaining({
        artifactType: BUNDLE_V03_MEDIA_TYPE,
        annotations: expect.objectContaining({ [Annotations.BundlePredicateType]: 'https://slsa.dev/provenance/v1', [Annotations.BundleContent]: 'dsse-envelope' }),
      }),
    ]);
    const referrer = ManifestSchema.parse(JSON.parse(skopeoRaw(`${reg.host}/kairos/att@${idx.manifests[0]!.digest}`)));
    expect(referrer).toMatchObject({ artifactType: BUNDLE_V03_MEDIA_TYPE, subject: { digest }, layers: [{ mediaType: BUNDLE_V03_MEDIA_TYPE }] });

    // Copy to another repository, pull into a fresh layout: the attestations come along and verify everywhere.
    ok(kbundle(['copy', `${reg.host}/kairos/att:v1`, `${reg.host}/mirror/att:v1`]));
    const pulled = join(tempDir(), 'pulled');
    ok(kbundle(['pull', `${reg.host}/mirror/att:v1`, '-o', `oci:${pulled}:v1`]));
    for (const ref of [`oci:${dir}:t`, `${reg.host}/kairos/att:v1`, `${reg.host}/mirror/att:v1`, `oci:${pulled}:v1`]) {
      const v = verifyKeyed(ref, 'slsaprovenance1');
      expect(v).toMatchObject({ verified: true, digest });
      expect(v.attestations.map((x) => x.format).sort()).toEqual(['bundle', 'legacy']);
      for (const x of v.attestations) expect(x.statement.predicate).toEqual(provenance);
    }
    for (const ref of [`${reg.host}/kairos/att@${amd.image}`, `${reg.host}/mirror/att@${amd.image}`]) {
      const v = verifyKeyed(ref, 'spdxjson');
      expect(v.attestations).toHaveLength(2);
      expect(v.attestations[0]!.statement.subject).toEqual([{ name: `${reg.host}/kairos/att`, digest: { sha256: amd.image.slice(7) } }]);
      expect(v.attestations[0]!.statement.predicate).toEqual(JSON.parse(readFileSync(amd.path, 'utf8')));
    }
    // A containers-policy.json names whom to trust as well (its sigstoreSigned key for that scope).
    const cp = join(tempDir(), 'policy.json');
    writeFileSync(
      cp,
      JSON.stringify({
        default: [{ type: 'reject' }],
        transports: { docker: { [`${reg.host}/mirror`]: [{ type: 'sigstoreSigned', keyPath: join(keys, 'release.pub'), signedIdentity: { type: 'matchRepository' } }] } },
      }),
    );
    expect((JSON.parse(ok(kbundle(['verify-attestation', `${reg.host}/mirror/att:v1`, '--type', 'slsaprovenance1', '--policy', cp, '--json'])).stdout) as Verified).attestations).toHaveLength(2);
    const rejected = kbundle(['verify-attestation', `${reg.host}/kairos/att:v1`, '--type', 'slsaprovenance1', '--policy', cp]);
    expect(rejected.code).toBe(EXIT_CODES.REFUSED);
    expect(rejected.stderr).toMatch(/is "reject"/);
    // Another key, another type: refused, naming what failed.
    const wrongKey = kbundle(['verify-attestation', `${reg.host}/mirror/att:v1`, '--type', 'slsaprovenance1', '--key', join(keys, 'other.pub')]);
    expect(wrongKey.code).toBe(EXIT_CODES.REFUSED);
    expect(wrongKey.stderr).toMatch(/attestation verification failed for type slsaprovenance1: \[(bundle|legacy) .*\] (signed by an unknown key|not signed by)/);
    const wrongType = kbundle(['verify-attestation', `${reg.host}/mirror/att:v1`, '--type', 'cyclonedx', '--key', join(keys, 'release.pub')]);
    expect(wrongType.code).toBe(EXIT_CODES.REFUSED);
    expect(wrongType.stderr).toMatch(/no attestations of type cyclonedx \(found: slsaprovenance1\)/);
    // --no-signatures leaves them behind.
    ok(kbundle(['copy', `${reg.host}/kairos/att:v1`, `${reg.host}/bare/att:v1`, '--no-signatures']));
    expect(kbundle(['verify-attestation', `${reg.host}/bare/att:v1`, '--type', 'slsaprovenance1', '--key', join(keys, 'release.pub')]).stderr).toMatch(/no attestations of type slsaprovenance1/);
  });

  it('keyless: a Fulcio certificate and a Rekor entry; the identity must match exactly; a --format bundle attestation travels too', async () => {
    const { dir, digest } = layout('keyless');
    ok(kbundle(['push', `oci:${dir}:t`, `${reg.host}/kairos/keyless-att:v1`]));
    const token = stack.token(ID, ISSUER);
    ok(
      await kbundleAsync(['attest', `${reg.host}/kairos/keyless-att:v1`, '--predicate', provenanceFile, '--type', 'slsaprovenance1', '--fulcio-url', stack.url, '--rekor-url', stack.url], {
        env: { ...process.env, SIGSTORE_ID_TOKEN: token },
      }),
    );
    const vuln = join(tempDir(), 'vuln.json');
    writeFileSync(
      vuln,
      JSON.stringify({
        invocation: {},
        scanner: { uri: 'pkg:github/aquasecurity/trivy', version: '0.50.0', result: {} },
        metadata: { scanStartedOn: '2026-01-01T00:00:00Z', scanFinishedOn: '2026-01-01T00:00:01Z' },
      }),
    );
    ok(
      await kbundleAsync(['attest', `${reg.host}/kairos/keyless-att:v1`, '--predicate', vuln, '--type', 'vuln', '--new-bundle-format', '--fulcio-url', stack.url, '--rekor-url', stack.url], {
        env: { ...process.env, SIGSTORE_ID_TOKEN: token },
      }),
    );
    const att = ManifestSchema.parse(JSON.parse(skopeoRaw(`${reg.host}/kairos/keyless-att:${attachmentTag(digest, 'att')}`)));
    expect(att.layers).toHaveLength(1); // the vuln scan went to the referrer only
    expect(Object.keys(att.layers[0]!.annotations!).sort()).toEqual([Annotations.Bundle, Annotations.Certificate, Annotations.Chain, Annotations.Signature, PREDICATE_TYPE_ANNOTATION].sort());
    expect(JSON.parse(att.layers[0]!.annotations![Annotations.Bundle]!).Payload).toMatchObject({ logIndex: expect.any(Number) });

    ok(kbundle(['copy', `${reg.host}/kairos/keyless-att:v1`, `${reg.host}/mirror/keyless-att:v1`]));
    const args = (ref: string, type: string, id = ID) => [
      'verify-attestation',
      ref,
      '--type',
      type,
      '--trusted-root',
      stack.trustedRootFile,
      '--certificate-identity',
      id,
      '--certificate-oidc-issuer',
      ISSUER,
      '--json',
    ];
    for (const ref of [`${reg.host}/kairos/keyless-att:v1`, `${reg.host}/mirror/keyless-att:v1`]) {
      const v = JSON.parse(ok(kbundle(args(ref, 'slsaprovenance1'))).stdout) as Verified;
      expect(v.attestations).toHaveLength(2);
      for (const x of v.attestations) expect(x).toMatchObject({ kind: 'keyless', identity: ID });
      const s = JSON.parse(ok(kbundle(args(ref, 'vuln'))).stdout) as Verified;
      expect(s.attestations.map((x) => x.format)).toEqual(['bundle']);
      expect(s.attestations[0]!.statement.subject[0]!.name).toBe(`${reg.host}/kairos/keyless-att`);
    }
    const prefix = kbundle(args(`${reg.host}/mirror/keyless-att:v1`, 'slsaprovenance1', 'https://github.com/kairos-io/bundles'));
    expect(prefix.code).toBe(EXIT_CODES.REFUSED);
    expect(prefix.stderr).toMatch(/certificate identity ".*" does not match "https:\/\/github.com\/kairos-io\/bundles"/);
    // The provenance's builder id can be pinned too.
    ok(kbundle([...args(`${reg.host}/mirror/keyless-att:v1`, 'slsaprovenance1'), '--builder-id', BUILDER]));
    const builder = kbundle([...args(`${reg.host}/mirror/keyless-att:v1`, 'slsaprovenance1'), '--builder-id', 'https://evil.example/builder']);
    expect(builder.stderr).toMatch(/provenance builder id is "https:\/\/github.com\/kairos-io\/bundles\/.github\/workflows\/release.yml", not "https:\/\/evil.example\/builder"/);
  });
});

describe('trust policies that require attestations', () => {
  it('verify and install --policy: a signed image also needs a provenance from the builder identity', async () => {
    const policy = join(tempDir(), 'policy.yaml');
    writeFileSync(
      policy,
      `version: 1
trustedRoots:
  local: ${stack.trustedRootFile}
policies:
  - name: bundles
    images: ["${reg.host}/policy/**"]
    signers:
      - key: ${join(keys, 'release.pub')}
    attestations:
      - type: slsaprovenance1
        builderId: ${BUILDER}
        signers:
          - keyless: { identity: "${ID}", issuer: "${ISSUER}", trustedRoot: local }
`,
    );
    const push = (repo: string, variant: string) => {
      const { dir, digest } = layout(variant);
      ok(kbundle(['push', `oci:${dir}:t`, `${reg.host}/policy/${repo}:v1`]));
      ok(kbundle(['sign', `${reg.host}/policy/${repo}:v1`, '--key', join(keys, 'release.key')], { env: env() }));
      return digest;
    };
    const attest = (repo: string, id: string, predicate = provenanceFile) =>
      kbundleAsync(['attest', `${reg.host}/policy/${repo}:v1`, '--predicate', predicate, '--type', 'slsaprovenance1', '--fulcio-url', stack.url, '--rekor-url', stack.url], {
        env: { ...process.env, SIGSTORE_ID_TOKEN: stack.token(id, ISSUER) },
      }).then(ok);

    push('good', 'good');
    await attest('good', ID);
    ok(kbundle(['verify', `${reg.host}/policy/good:v1`, '--policy', policy]));
    const root = tempDir();
    const inst = ok(kbundle(['install', `container://${reg.host}/policy/good:v1`, '--root', root, '--policy', policy, '--platform', 'linux/amd64', '--json']));
    expect(JSON.parse(inst.stdout)).toMatchObject({ verified: expect.any(String) });
    expect(readFileSync(join(root, 'usr/local/share/demo/a.txt'), 'utf8')).toBe('alpha\n');
    // The same policy through verify-attestation: its attestations entry says whom to trust.
    expect((JSON.parse(ok(kbundle(['verify-attestation', `${reg.host}/policy/good:v1`, '--type', 'slsaprovenance1', '--policy', policy, '--json'])).stdout) as Verified).attestations).toHaveLength(2);

    push('unattested', 'unattested');
    const none = kbundle(['verify', `${reg.host}/policy/unattested:v1`, '--policy', policy]);
    expect(none.code).toBe(EXIT_CODES.REFUSED);
    expect(none.stderr).toMatch(/no attestations of type slsaprovenance1/);
    expect(none.stderr).toMatch(/trust policy "bundles" requires this attestation/);
    const root2 = tempDir();
    const refused = kbundle(['install', `container://${reg.host}/policy/unattested:v1`, '--root', root2, '--policy', policy, '--platform', 'linux/amd64']);
    expect(refused.code).toBe(EXIT_CODES.REFUSED);
    expect(refused.stderr).toMatch(/no attestations of type slsaprovenance1/);
    expect(() => readFileSync(join(root2, 'usr/local/share/demo/a.txt'))).toThrow();

    push('stranger', 'stranger');
    await attest('stranger', 'https://github.com/evil/fork/.github/workflows/release.yml@refs/heads/main');
    expect(kbundle(['verify', `${reg.host}/policy/stranger:v1`, '--policy', policy]).stderr).toMatch(/certificate identity "https:\/\/github.com\/evil\/fork.*" does not match/);

    push('otherbuilder', 'otherbuilder');
    const other = join(tempDir(), 'p.json');
    writeFileSync(other, JSON.stringify({ ...provenance, runDetails: { builder: { id: 'https://ci.example/other' } } }));
    await attest('otherbuilder', ID, other);
    expect(kbundle(['verify', `${reg.host}/policy/otherbuilder:v1`, '--policy', policy]).stderr).toMatch(/provenance builder id is "https:\/\/ci.example\/other", not/);
  });

  it('refuses a policy attestations entry with an unknown type or a builderId on a non-provenance type', () => {
    const bad = join(tempDir(), 'p.yaml');
    const base = `version: 1\npolicies:\n  - images: ["x/**"]\n    signers: [{ key: ${join(keys, 'release.pub')} }]\n    attestations:\n`;
    writeFileSync(bad, `${base}      - type: sbom-please\n`);
    expect(kbundle(['verify', 'x/y:1', '--policy', bad]).stderr).toMatch(/policies\.0\.attestations\.0\.type: unknown predicate type "sbom-please"/);
    writeFileSync(bad, `${base}      - type: spdxjson\n        builderId: x\n`);
    expect(kbundle(['verify', 'x/y:1', '--policy', bad]).stderr).toMatch(/policies\.0\.attestations\.0\.builderId: only SLSA provenance predicates/);
  });
});

describe('bad input', () => {
  const tagsOf = (dir: string) => (JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: unknown[] }).manifests.length;

  it('attest refuses a predicate that is not JSON, does not match its type, an unknown type, a missing --predicate — and writes nothing', () => {
    const { dir } = layout();
    const before = tagsOf(dir);
    const f = join(tempDir(), 'x');
    const run = (args: string[]) => kbundle(['attest', `oci:${dir}:t`, '--key', join(keys, 'release.key'), ...args], { env: env() });
    writeFileSync(f, 'this is not json');
    let r = run(['--predicate', f, '--type', 'custom']);
    expect(r.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(r.stderr).toMatch(/: the predicate is not JSON/);
    r = run(['--predicate', provenanceFile, '--type', 'cyclonedx']);
    expect(r.stderr).toMatch(/not a cyclonedx predicate \(https:\/\/cyclonedx.org\/bom\): bomFormat: /);
    writeFileSync(f, JSON.stringify({ buildDefinition: { buildType: 'x', externalParameters: {} }, runDetails: { builder: {} } }));
    r = run(['--predicate', f, '--type', 'slsaprovenance1']);
    expect(r.stderr).toMatch(/not a slsaprovenance1 predicate .*: runDetails\.builder\.id: Required/);
    r = run(['--predicate', provenanceFile, '--type', 'provenance']);
    expect(r.stderr).toMatch(/unknown predicate type "provenance"/);
    r = run(['--predicate', provenanceFile, '--type', 'spdx']);
    expect(r.stderr).toMatch(/SPDX tag-value is not JSON; use --type spdxjson/);
    r = run([]);
    expect(r.stderr).toMatch(/--predicate <file> is required/);
    expect(r.stderr).not.toMatch(/at .*\.js/); // no stack trace
    expect(tagsOf(dir)).toBe(before);
    // A custom URI takes any JSON object; cosign's custom type wraps the text.
    writeFileSync(f, '{"a":1}');
    ok(run(['--predicate', f, '--type', 'https://example.com/predicate/v1']));
    expect(predicateFromFile('{"a":1}', 'custom', 'f', new Date(0)).json).toBe('{"Data":"{\\"a\\":1}","Timestamp":"1970-01-01T00:00:00Z"}');
  });

  describe('verify-attestation refuses, naming the check', () => {
    let dir: string;
    let store: OciLayout;
    let subject: Descriptor;
    let other: Descriptor;
    let key: Awaited<ReturnType<typeof loadPrivateKey>>;
    const verify = (type = 'slsaprovenance1', ref = 't') => kbundle(['verify-attestation', `oci:${dir}:${ref}`, '--type', type, '--key', join(keys, 'release.pub'), '--format', 'both']);

    /** A DSSE envelope signed with the release key over `statement` with `payloadType`. */
    const envelope = (statement: Buffer, payloadType = INTOTO_PAYLOAD_TYPE) =>
      dsseEnvelopeJson({ payload: statement, payloadType, signatures: [{ sig: cryptoSign('sha256', preAuthEncoding(payloadType, statement), key.privateKey) }] });
    const putAtt = (on: Descriptor, payload: Buffer, annotations: Record<string, string> = {}, mediaType = DSSE_ENVELOPE_MEDIA_TYPE) =>
      appendAttachedLayer(store, attachmentTag(on.digest, 'att'), async () => ({
        payload,
        mediaType,
        annotations: { [PREDICATE_TYPE_ANNOTATION]: PredicateTypes.slsaprovenance1, [Annotations.Signature]: '', ...annotations },
      }));

    beforeAll(async () => {
      ({ dir } = layout('bad'));
      store = await OciLayout.open(dir);
      subject = await store.resolve('t');
      const second = layout('other');
      const o = await OciLayout.open(second.dir);
      other = await o.resolve('t');
      // The other image, copied in under tag `o`, so one layout holds both.
      mustRun('skopeo', ['copy', '--all', `oci:${second.dir}:t`, `oci:${dir}:o`]);
      key = await loadPrivateKey(join(keys, 'release.key'), async () => PW);
    });

    const statementFor = (digest: string, type: string = PredicateTypes.slsaprovenance1, predicate: unknown = provenance) => attestationStatement(digest, '', type, JSON.stringify(predicate));

    it('a statement for another digest (legacy and bundle)', async () => {
      await putAtt(other, envelope(statementFor(subject.digest)));
      const r = verify('slsaprovenance1', 'o');
      expect(r.code).toBe(EXIT_CODES.REFUSED);
      expect(r.stderr).toMatch(new RegExp(`\\[legacy sha256-[a-f0-9]+\\.att layer 1\\] the statement was signed for ${subject.digest}, not ${other.digest}`));
      // A bundle referrer of `other` whose statement names `subject`.
      const fresh = layout('bundle-digest');
      const s = await OciLayout.open(fresh.dir);
      const subj = await s.resolve('t');
      const b = await attestImage(s, subj, { key, predicate: { type: PredicateTypes.slsaprovenance1, json: JSON.stringify(provenance) }, formats: ['bundle'] });
      const ref = (await listReferrers(s, subj))[0]!;
      const m = ManifestSchema.parse(JSON.parse((await fetchBytes(s, ref)).toString()));
      const blob = await fetchBytes(s, m.layers[0]!, 1 << 24);
      await pushBundleReferrer(store, other, blob, new Date(0), PredicateTypes.slsaprovenance1);
      expect(b.attestations).toHaveLength(1);
      const r2 = verify('slsaprovenance1', 'o');
      expect(r2.stderr).toMatch(new RegExp(`\\[bundle referrer sha256:[a-f0-9]+…\\] the statement was signed for ${subj.digest}, not ${other.digest}`));
    });

    it('a payload type other than in-toto, a bad signature, a wrong predicate type, a predicate not matching its type', async () => {
      const { dir: d2 } = layout('checks');
      dir = d2;
      store = await OciLayout.open(dir);
      subject = await store.resolve('t');
      await putAtt(subject, envelope(statementFor(subject.digest), 'text/plain'));
      const good = envelope(statementFor(subject.digest));
      const env = JSON.parse(good.toString()) as { signatures: { sig: string }[] };
      const sig = Buffer.from(env.signatures[0]!.sig, 'base64');
      sig.writeUInt8(sig.readUInt8(sig.length - 1) ^ 1, sig.length - 1);
      env.signatures[0]!.sig = sig.toString('base64');
      await putAtt(subject, Buffer.from(JSON.stringify(env)));
      // Annotated as provenance, but the signed statement is a custom predicate.
      await putAtt(subject, envelope(statementFor(subject.digest, PredicateTypes.custom, { Data: 'x', Timestamp: 'y' })));
      // The right type URI, a predicate that is no provenance.
      await putAtt(subject, envelope(statementFor(subject.digest, PredicateTypes.slsaprovenance1, { hello: 'world' })));
      const r = kbundle(['verify-attestation', `oci:${dir}:t`, '--type', 'slsaprovenance1', '--key', join(keys, 'release.pub'), '--json']);
      expect(r.code).toBe(EXIT_CODES.REFUSED);
      expect(JSON.parse(r.stdout)).toMatchObject({ verified: false, predicateType: PredicateTypes.slsaprovenance1 });
      expect(r.stderr).toContain('[legacy sha256-');
      expect(r.stderr).toMatch(/layer 1\] DSSE payload type is "text\/plain", not application\/vnd.in-toto\+json/);
      expect(r.stderr).toMatch(/layer 2\] not signed by .*release\.pub/);
      expect(r.stderr).toMatch(/layer 3\] predicate type is "https:\/\/cosign.sigstore.dev\/attestation\/v1", not https:\/\/slsa.dev\/provenance\/v1/);
      expect(r.stderr).toMatch(/layer 4\] the predicate is not a slsaprovenance1 predicate: buildDefinition: Required/);
      // One good attestation among them is enough; the others are listed as not accepted.
      await putAtt(subject, good);
      const v = JSON.parse(ok(kbundle(['verify-attestation', `oci:${dir}:t`, '--type', 'slsaprovenance1', '--key', join(keys, 'release.pub'), '--json'])).stdout) as Verified;
      expect(v.attestations.map((a) => (a as { location: string }).location)).toEqual([`${attachmentTag(subject.digest, 'att')} layer 5`]);
      expect(v.rejected).toHaveLength(4);
    });

    it('malformed bundle JSON, wrong media types, a malformed envelope', async () => {
      const { dir: d3 } = layout('media');
      dir = d3;
      store = await OciLayout.open(dir);
      subject = await store.resolve('t');
      await pushBundleReferrer(store, subject, Buffer.from('{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": '), new Date(0), PredicateTypes.slsaprovenance1);
      // A referrer whose one layer is not a Sigstore bundle.
      const blob = Buffer.from('{}');
      const layer = { mediaType: 'application/json', digest: digestOf(blob), size: blob.length };
      await store.push(layer, blob);
      await store.push({ mediaType: MediaType.OciEmpty, digest: digestOf('{}'), size: 2 }, Buffer.from('{}'));
      const m = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.OciManifest,
          artifactType: BUNDLE_V03_MEDIA_TYPE,
          config: { mediaType: MediaType.OciEmpty, digest: digestOf('{}'), size: 2 },
          layers: [layer],
          subject,
          annotations: { [Annotations.BundlePredicateType]: PredicateTypes.slsaprovenance1 },
        }),
      );
      await attachReferrer(store, m, { mediaType: MediaType.OciManifest, digest: digestOf(m), size: m.length });
      await putAtt(subject, envelope(statementFor(subject.digest)), {}, 'application/vnd.dev.cosign.simplesigning.v1+json');
      await putAtt(subject, Buffer.from('{"payload": 12}'));
      const r = verify();
      expect(r.code).toBe(EXIT_CODES.REFUSED);
      expect(r.stderr).toMatch(/\] bundle is not valid JSON/);
      expect(r.stderr).toMatch(/\] the referrer's layer media type application\/json is not application\/vnd.dev.sigstore.bundle.v0.3\+json/);
      expect(r.stderr).toMatch(/layer 1\] layer media type application\/vnd.dev.cosign.simplesigning.v1\+json is not application\/vnd.dsse.envelope.v1\+json/);
      expect(r.stderr).toMatch(/layer 2\] malformed DSSE envelope: payload: Expected string, received number/);
      expect(
        r.stderr
          .trim()
          .split('\n')
          .filter((l) => l.startsWith('kbundle: error:')),
      ).toHaveLength(1);
    });
  });

  it('keyless: a certificate chaining to an unknown root, and a certificate used outside its validity', async () => {
    const otherStack = await startSigstoreStack();
    const late = await startSigstoreStack({ clock: new Date(stack.clock.getTime() + 20 * 60_000) });
    try {
      const { dir } = layout('roots');
      const store = await OciLayout.open(dir);
      const subject = await store.resolve('t');
      const predicate = { type: PredicateTypes.slsaprovenance1, json: JSON.stringify(provenance) };
      await attestImage(store, subject, { keyless: { identityToken: otherStack.token(ID, ISSUER), fulcioURL: otherStack.url }, rekorURL: otherStack.url, predicate });
      const req = (extra: Partial<KeylessRequirement> = {}): KeylessRequirement => ({
        kind: 'keyless',
        name: ID,
        identity: exactMatcher(ID, 'id'),
        issuer: exactMatcher(ISSUER, 'iss'),
        trustedRoot: parseTrustedRoot(readFileSync(stack.trustedRootFile, 'utf8'), 'root'),
        tlog: true,
        ctlog: true,
        ...extra,
      });
      await expect(verifyAttestations(store, subject, { predicateType: PredicateTypes.slsaprovenance1, signers: [req()] })).rejects.toThrow(
        /does not chain to a trusted CA|inclusion promise does not verify/,
      );

      // Fulcio from `stack`, timestamp from a TSA whose clock is 20 minutes ahead: outside the certificate's validity.
      const { dir: d2 } = layout('late');
      const s2 = await OciLayout.open(d2);
      const subj2 = await s2.resolve('t');
      await attestImage(s2, subj2, { keyless: { identityToken: stack.token(ID, ISSUER), fulcioURL: stack.url }, tsaURL: late.url, predicate });
      const root = { ...stack.trustedRoot, timestampAuthorities: late.trustedRoot.timestampAuthorities };
      const lateReq = req({ tlog: false, trustedRoot: parseTrustedRoot(JSON.stringify(root), 'root') });
      const err = await verifyAttestations(s2, subj2, { predicateType: PredicateTypes.slsaprovenance1, signers: [lateReq] }).catch((e: Error) => e);
      expect((err as Error).message).toMatch(/\[bundle .*\] .*(not valid when it was used|does not chain)/);
      expect((err as Error).message).toMatch(/\[legacy .*\] .*(not valid when it was used|does not chain)/);
    } finally {
      await otherStack.stop();
      await late.stop();
    }
  });
});

describe('legacy .att layers', () => {
  it('accumulate one per attestation; --replace drops those of the same predicate type only', async () => {
    const { dir } = layout('replace');
    const store = await OciLayout.open(dir);
    const subject = await store.resolve('t');
    const key = await loadPrivateKey(join(keys, 'release.key'), async () => PW);
    const prov = { type: PredicateTypes.slsaprovenance1, json: JSON.stringify(provenance) };
    const custom = { type: PredicateTypes.custom, json: JSON.stringify({ Data: 'x', Timestamp: '1970-01-01T00:00:00Z' }) };
    const layers = async () => ManifestSchema.parse(JSON.parse((await fetchBytes(store, await store.resolve(attachmentTag(subject.digest, 'att')))).toString())).layers;
    await attestImage(store, subject, { key, predicate: prov, formats: ['legacy'] });
    await attestImage(store, subject, { key, predicate: custom, formats: ['legacy'] });
    await attestImage(store, subject, { key, predicate: prov, formats: ['legacy'] });
    expect((await layers()).map((l) => l.annotations?.[PREDICATE_TYPE_ANNOTATION])).toEqual([PredicateTypes.slsaprovenance1, PredicateTypes.custom, PredicateTypes.slsaprovenance1]);
    await attestImage(store, subject, { key, predicate: prov, formats: ['legacy'], replace: true });
    expect((await layers()).map((l) => l.annotations?.[PREDICATE_TYPE_ANNOTATION])).toEqual([PredicateTypes.custom, PredicateTypes.slsaprovenance1]);
    const v = await verifyAttestations(store, subject, { predicateType: PredicateTypes.slsaprovenance1, signers: [{ kind: 'key', name: 'release', keys: [key.publicKey], tlog: false }] });
    expect(v.attestations.map((a) => a.location)).toEqual([`${attachmentTag(subject.digest, 'att')} layer 2`]);
  });
});

describe("cosign's own attestation bundle", () => {
  it('verifies against the public-good root (keyless, offline) and is bound to its subject digest only', async () => {
    const bytes = readFileSync(join(REPO_ROOT, 'test/fixtures/sigstore/cosign-attestation/oci-attestation.sigstore.json'));
    const parsed = parseImageBundle(bytes);
    const digest = 'sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4';
    const facts = checkStatement(parsed, digest, PredicateTypes.custom);
    expect(facts.statement).toMatchObject({ _type: 'https://in-toto.io/Statement/v0.1', predicate: { Data: '{"foo": "bar"}\n' } });
    expect(() => checkStatement(parsed, `sha256:${'0'.repeat(64)}`, PredicateTypes.custom)).toThrow(/the statement was signed for sha256:7321.*, not sha256:0000/);
    expect(() => checkStatement(parsed, digest, PredicateTypes.spdxjson)).toThrow(/predicate type is "https:\/\/cosign.sigstore.dev\/attestation\/v1", not https:\/\/spdx.dev\/Document/);
    const root = parseTrustedRoot(readFileSync(join(REPO_ROOT, 'test/fixtures/sigstore/trusted-roots/public-good.json'), 'utf8'), 'public-good');
    const req: KeylessRequirement = {
      kind: 'keyless',
      name: 'cody',
      identity: exactMatcher('cody@soyland.com', 'id'),
      issuer: exactMatcher('https://github.com/login/oauth', 'iss'),
      trustedRoot: root,
      tlog: true,
      ctlog: true,
    };
    const v = await checkRequirement(req, { sig: parsed, annotations: {} }, { format: 'bundle', location: 'fixture', digest, annotations: {} });
    expect(v).toMatchObject({ kind: 'keyless', identity: 'cody@soyland.com', issuer: 'https://github.com/login/oauth' });
    expect(bundleFromJSON(JSON.parse(bytes.toString())).mediaType).toBe(BUNDLE_V03_MEDIA_TYPE);
  });
});
