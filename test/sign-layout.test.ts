/** `kbundle sign` / `kbundle verify` on OCI layout directories, and their user-facing errors. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTo } from '../src/builder/output.js';
import { signatureTag } from '../src/attach/formats.js';
import { referrersTag } from '../src/attach/tags.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { kbundle } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { CONTAINER_FILES, CONTAINER_SPEC, writeBundle } from './helpers/fixture-bundle.js';

let keys: string;
let layout: string;
let digest: string;
const env = { ...process.env, KBUNDLE_PASSWORD: 'pw' };

beforeAll(async () => {
  keys = tempDir();
  expect(kbundle(['key', 'generate', '--out', join(keys, 'k')], { env }).code).toBe(0);
  const b = writeBundle(join(tempDir(), 'b'), CONTAINER_SPEC, CONTAINER_FILES);
  layout = join(tempDir(), 'oci');
  digest = (await buildTo(b, { transport: 'oci', path: layout, ref: 'v1' }, { sourceDateEpoch: 0, platforms: ['linux/amd64'] })).root.digest;
});
afterAll(cleanupTempDirs);

describe('signing an OCI layout', () => {
  it('signs by digest into the layout (both formats as tags) and verifies, human and --json', async () => {
    const s = kbundle(['sign', `oci:${layout}:v1`, '--key', join(keys, 'k.key'), '-a', 'team=edge'], { env });
    expect(s.stderr).toBe('');
    expect(s.code).toBe(0);
    expect(s.stdout).toContain(`digest: ${digest}`);
    const l = await OciLayout.open(layout);
    expect(await l.tags()).toEqual(expect.arrayContaining(['v1', signatureTag(digest), referrersTag(digest)]));
    const v = kbundle(['verify', `oci:${layout}:v1`, '--key', join(keys, 'k.pub'), '--annotation', 'team=edge']);
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(
      /^verified oci:.*@sha256:[a-f0-9]{64}: 2 signature\(s\) satisfy the policy\n {2}bundle referrer sha256:.* key sha256:[a-f0-9]{64}\n {2}legacy sha256-.*\.sig layer 1: key sha256:/,
    );
    const j = JSON.parse(kbundle(['verify', `oci:${layout}:v1`, '--key', join(keys, 'k.pub'), '--json', '--format', 'bundle']).stdout) as {
      verified: boolean;
      signers: { format: string; annotations: Record<string, string> }[];
    };
    expect(j.verified).toBe(true);
    expect(j.signers).toEqual([expect.objectContaining({ format: 'bundle', annotations: { team: 'edge' } })]);
  });

  it('a policy can cover layouts with an oci: glob', () => {
    const p = join(tempDir(), 'policy.yaml');
    writeFileSync(p, `version: 1\npolicies:\n  - images: ["oci:${layout}"]\n    signers: [{ key: ${join(keys, 'k.pub')} }]\n`);
    expect(kbundle(['verify', `oci:${layout}:v1`, '--policy', p]).code).toBe(0);
  });
});

describe('user errors are one clear line', () => {
  const cases: [string, string[], NodeJS.ProcessEnv | undefined, RegExp][] = [
    ['sign without key or token', ['sign', 'oci:/nonexistent:v1'], { ...process.env, SIGSTORE_ID_TOKEN: '' }, /give --key <file>, or an identity token/],
    ['verify without anyone to trust', ['verify', 'oci:/nonexistent:v1'], undefined, /say whom to trust/],
    // No --trusted-root: the embedded public-good root applies, so the missing layout is what is reported.
    ['keyless verify without a trusted root', ['verify', 'oci:/x:v1', '--certificate-identity', 'a', '--certificate-oidc-issuer', 'b'], undefined, /oci:\/x: not an OCI image layout/],
    [
      'both identity forms',
      ['verify', 'oci:/x:v1', '--certificate-identity', 'a', '--certificate-identity-regexp', 'b', '--certificate-oidc-issuer', 'c'],
      undefined,
      /exactly one of --certificate-identity or --certificate-identity-regexp/,
    ],
    ['an archive', ['verify', 'oci-archive:/tmp/x.tar', '--key', '/dev/null'], undefined, /signatures live in a registry or an OCI layout directory/],
    ['a wrong key password', ['sign', 'oci:/x:v1', '--key', 'KEY'], { ...process.env, KBUNDLE_PASSWORD: 'nope' }, /wrong password/],
    ['a certificate given as --key', ['verify', 'oci:/x:v1', '--key', 'CERT'], undefined, /expected "PUBLIC KEY" PEM blocks, found "CERTIFICATE"/],
  ];
  for (const [name, args, e, re] of cases) {
    it(name, () => {
      const cert = join(tempDir(), 'c.pem');
      writeFileSync(cert, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
      const r = kbundle(
        args.map((a) => (a === 'KEY' ? join(keys, 'k.key') : a === 'CERT' ? cert : a)),
        { env: e },
      );
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(re);
      expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
    });
  }
});
