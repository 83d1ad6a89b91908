import { generateKeyPairSync } from 'node:crypto';
import { copyFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { globToRegExp, loadPolicy, parsePolicy } from '../src/verify/policy.js';
import { matches, regexpMatcher } from '../src/verify/identity.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';

afterAll(cleanupTempDirs);

const REPO = join(import.meta.dirname, '..');
const EXAMPLES = join(REPO, 'signing', 'policies');

function policyError(yaml: string): string {
  try {
    parsePolicy(yaml, 'policy.yaml');
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return (e as Error).message;
  }
  throw new Error('expected the policy to be refused');
}

describe('trust policy files', () => {
  it('every example under signing/policies parses', () => {
    const files = readdirSync(EXAMPLES).filter((f) => f.endsWith('.yaml'));
    expect(files.length).toBeGreaterThanOrEqual(3);
    for (const f of files) parsePolicy(readFileSync(join(EXAMPLES, f), 'utf8'), join(EXAMPLES, f));
  });

  it('resolves the first matching entry, with keys and trusted roots relative to the policy file', async () => {
    const dir = tempDir();
    const pub = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'pem', type: 'spki' }).toString();
    writeFileSync(join(dir, 'release.pub'), pub);
    copyFileSync(join(REPO, 'signing', 'trust-roots', 'public-good.json'), join(dir, 'root.json'));
    writeFileSync(
      join(dir, 'policy.yaml'),
      `version: 1
trustedRoots: { pg: root.json }
policies:
  - name: bundles
    images: ["reg.example:5000/kairos/*"]
    signers: [{ key: release.pub }]
    annotations: { channel: stable, build: 7 }
  - name: everything-else
    images: ["**"]
    require: all
    signers:
      - keyless: { identity: a@b.c, issuer: https://iss, trustedRoot: pg }
`,
    );
    const p = await loadPolicy(join(dir, 'policy.yaml'));
    const a = await p.policyFor('reg.example:5000/kairos/metallb');
    expect(a).toMatchObject({ name: 'bundles', require: 'any', annotations: { channel: 'stable', build: '7' } });
    expect(a.signers[0]).toMatchObject({ kind: 'key', name: 'release.pub', tlog: false });
    const b = await p.policyFor('reg.example:5000/kairos/a/b');
    expect(b).toMatchObject({ name: 'everything-else', require: 'all' });
    expect(b.signers[0]).toMatchObject({ kind: 'keyless', tlog: true, ctlog: true });
  });

  it('refuses an image no entry covers', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'p.yaml'), 'version: 1\npolicies:\n  - images: ["a/*"]\n    signers: [{ keyData: "x" }]\n');
    const p = await loadPolicy(join(dir, 'p.yaml'));
    await expect(p.policyFor('b/c')).rejects.toThrow(/no entry of the trust policy .* covers this image/);
  });

  it('explains malformed policies: where, and what is wrong', () => {
    expect(policyError('version: 1\npolicies: [\n')).toMatch(/invalid YAML \(line \d+, column \d+\)/);
    expect(policyError('policies: []\n')).toMatch(/invalid trust policy at version: must be 1/);
    expect(policyError('version: 1\npolicies: []\n')).toMatch(/at policies: list at least one policy entry/);
    expect(policyError('version: 1\npolicies:\n  - images: ["x"]\n    signer: []\n')).toMatch(/at policies\.0: unknown field\(s\) "signer"/);
    expect(policyError('version: 1\npolicies:\n  - images: ["x"]\n    signers: [{ key: a.pub, keyData: b }]\n')).toMatch(/policies\.0\.signers\.0: give exactly one of key \(a file\) or keyData/);
    expect(policyError('version: 1\npolicies:\n  - images: ["x"]\n    signers: [{ keyless: { identity: a, identityRegExp: b, issuer: c, trustedRoot: r.json } }]\n')).toMatch(
      /policies\.0\.signers\.0\.keyless: give exactly one of identity or identityRegExp/,
    );
    expect(policyError('version: 1\npolicies:\n  - images: ["x"]\n    signers: [{ keyless: { identity: a, trustedRoot: r.json } }]\n')).toMatch(/give exactly one of issuer or issuerRegExp/);
    expect(policyError('version: 1\npolicies:\n  - images: ["x"]\n    signers: [{ keyless: { identityRegExp: "a(", issuer: c, trustedRoot: r.json } }]\n')).toMatch(
      /identityRegExp: "a\(" is not a valid regular expression/,
    );
    expect(policyError('version: 1\npolicies:\n  - images: ["x"]\n    signers: [{ keyless: { identity: a, issuer: c, trustedRoot: nosuch } }]\n')).toMatch(
      /trusted root "nosuch" is neither a name under trustedRoots nor a file path/,
    );
    expect(policyError('version: 1\npolicies:\n  - images: ["x"]\n    signers: [{ key: a.pub, tlog: true }]\n')).toMatch(/tlog: true needs a trustedRoot/);
    expect(policyError('version: 1\npolicies:\n  - images: ["x[ab]"]\n    signers: [{ key: a.pub }]\n')).toMatch(/only \* \*\* and \? are glob characters/);
    expect(policyError('version: 1\npolicies:\n  - images: ["x"]\n    require: most\n    signers: [{ key: a.pub }]\n')).toMatch(/policies\.0\.require/);
  });

  it('globs: * stays in one path segment, ** crosses them, everything else is literal', () => {
    const g = globToRegExp('registry.example.com/kairos/*');
    expect(g.test('registry.example.com/kairos/metallb')).toBe(true);
    expect(g.test('registry.example.com/kairos/a/b')).toBe(false);
    expect(g.test('registryXexample.com/kairos/metallb')).toBe(false);
    expect(globToRegExp('quay.io/kairos/**').test('quay.io/kairos/a/b/c')).toBe(true);
    expect(globToRegExp('127.0.0.1:5000/k?s').test('127.0.0.1:5000/kbs')).toBe(true);
    expect(globToRegExp('a/(b)+').test('a/(b)+')).toBe(true);
  });

  it('identity regular expressions are anchored', () => {
    const m = regexpMatcher('builder@example\\.com', 'x');
    expect(matches(m, 'builder@example.com')).toBe(true);
    expect(matches(m, 'evil-builder@example.com')).toBe(false);
    expect(matches(m, 'builder@example.com.attacker.test')).toBe(false);
    expect(matches(regexpMatcher('a|b', 'x'), 'ab')).toBe(false);
  });
});
