/**
 * containers-policy.json(5) as the node trust policy: containers/image's scope lookup, requirement
 * types and signedIdentity rules, against real cosign-format signatures in a registry:2 on loopback.
 */
import { createPublicKey } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTo } from '../src/builder/output.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { checkSignedIdentity, dockerIdentity, dockerScopes, parseContainersPolicy, requirementsFor } from '../src/policy/containers-policy.js';
import { kbundleAsync } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { CONTAINER_FILES, CONTAINER_SPEC, writeBundle } from './helpers/fixture-bundle.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';
import { startSigstoreStack } from './helpers/sigstore-stack.js';

const ACCEPT = [{ type: 'insecureAcceptAnything' }];
const REJECT = [{ type: 'reject' }];

function policyFile(dir: string, policy: unknown): string {
  const p = join(dir, `policy-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(p, JSON.stringify(policy, null, 2));
  return p;
}

describe('containers-policy.json parsing and scope lookup', () => {
  const parse = (p: unknown) => parseContainersPolicy(JSON.stringify(p, null, 2), 'policy.json');

  it('picks the most specific scope, then transports.docker[""], then default', () => {
    const p = parse({
      default: REJECT,
      transports: {
        docker: {
          'registry.example.com/team/app:1.0': ACCEPT,
          'registry.example.com/team/app': ACCEPT,
          'registry.example.com/team': ACCEPT,
          'registry.example.com': ACCEPT,
          '*.example.com': ACCEPT,
          '*.com': ACCEPT,
          '': ACCEPT,
        },
      },
    });
    const scope = (ref: string) => requirementsFor(p, dockerIdentity(ref)).scope;
    expect(scope('registry.example.com/team/app:1.0')).toBe('transports.docker["registry.example.com/team/app:1.0"]');
    expect(scope('registry.example.com/team/app:2.0')).toBe('transports.docker["registry.example.com/team/app"]');
    expect(scope('registry.example.com/team/other')).toBe('transports.docker["registry.example.com/team"]');
    expect(scope('registry.example.com/solo')).toBe('transports.docker["registry.example.com"]');
    expect(scope('mirror.example.com/x/y')).toBe('transports.docker["*.example.com"]');
    expect(scope('quay.io/x/y')).toBe('transports.docker[""]');
    expect(scope('127.0.0.1:5000/x/y')).toBe('transports.docker[""]');
    const noDefaultScope = parse({ default: REJECT, transports: { docker: { 'registry.example.com': ACCEPT } } });
    expect(requirementsFor(noDefaultScope, dockerIdentity('quay.io/x/y')).scope).toBe('default');
    // Docker Hub names normalise as containers/image normalises them; no tag means :latest.
    expect(dockerScopes(dockerIdentity('alpine'))).toEqual(['docker.io/library/alpine:latest', 'docker.io/library/alpine', 'docker.io/library', 'docker.io', '*.io']);
    expect(dockerScopes(dockerIdentity('127.0.0.1:5000/a/b@sha256:' + 'a'.repeat(64)))[0]).toBe('127.0.0.1:5000/a/b@sha256:' + 'a'.repeat(64));
  });

  it('signedIdentity compares the signed docker-reference as containers/image does', () => {
    const img = (r: string) => dockerIdentity(r);
    const digest = `sha256:${'b'.repeat(64)}`;
    const cases: [Parameters<typeof checkSignedIdentity>[0], string, string, boolean][] = [
      [{ type: 'matchRepoDigestOrExact' }, `h.io/a/b@${digest}`, 'h.io/a/b', true],
      [{ type: 'matchRepoDigestOrExact' }, 'h.io/a/b:1', 'h.io/a/b:1', true],
      [{ type: 'matchRepoDigestOrExact' }, 'h.io/a/b:1', 'h.io/a/b', false], // cosign names the repository only
      [{ type: 'matchRepoDigestOrExact' }, 'h.io/a/b:1', 'h.io/a/b:2', false],
      [{ type: 'matchExact' }, 'h.io/a/b:1', 'h.io/a/b:1', true],
      [{ type: 'matchExact' }, `h.io/a/b@${digest}`, 'h.io/a/b', false],
      [{ type: 'matchRepository' }, 'h.io/a/b:1', 'h.io/a/b', true],
      [{ type: 'matchRepository' }, 'h.io/a/b:1', 'h.io/a/c', false],
      [{ type: 'exactReference', dockerReference: 'h.io/x/y:9' }, 'h.io/a/b:1', 'h.io/x/y:9', true],
      [{ type: 'exactReference', dockerReference: 'h.io/x/y:9' }, 'h.io/a/b:1', 'h.io/a/b:1', false],
      [{ type: 'exactRepository', dockerRepository: 'h.io/x/y' }, 'h.io/a/b:1', 'h.io/x/y', true],
      [{ type: 'remapIdentity', prefix: 'mirror.io/m', signedPrefix: 'h.io/a' }, `mirror.io/m/b@${digest}`, 'h.io/a/b', true],
      [{ type: 'remapIdentity', prefix: 'mirror.io/m', signedPrefix: 'h.io/a' }, `mirror.io/mm/b@${digest}`, 'h.io/a/b', false], // prefix ends at a component
      [{ type: 'remapIdentity', prefix: 'mirror.io/m', signedPrefix: 'h.io/a' }, `other.io/m/b@${digest}`, 'other.io/m/b', true], // not remapped
    ];
    for (const [identity, image, signed, ok] of cases) {
      expect(checkSignedIdentity(identity, img(image), signed) === undefined, `${identity.type} ${image} ← ${signed}`).toBe(ok);
    }
    expect(checkSignedIdentity({ type: 'matchRepository' }, img('h.io/a/b:1'), 'not a ref!')).toMatch(/no valid docker-reference/);
  });

  it('the example in signing/policies/node-policy.json parses, with the scopes it documents', () => {
    const path = join(import.meta.dirname, '../signing/policies/node-policy.json');
    const p = parseContainersPolicy(readFileSync(path, 'utf8'), path);
    expect(requirementsFor(p, dockerIdentity('127.0.0.1:5000/kairos/metallb:0.14.9')).requirements[0]).toMatchObject({ type: 'sigstoreSigned', signedIdentity: { type: 'matchRepository' } });
    expect(requirementsFor(p, dockerIdentity('127.0.0.1:5000/scratch/x')).requirements).toEqual(ACCEPT);
    expect(requirementsFor(p, dockerIdentity('127.0.0.1:5000/elsewhere/x')).scope).toBe('default');
  });

  it('refuses what it does not implement, naming the field', () => {
    const err = (p: unknown) => {
      try {
        parse(p);
      } catch (e) {
        return { message: (e as Error).message, code: (e as { code?: string }).code };
      }
      throw new Error('accepted');
    };
    expect(err({ default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: '/k.gpg' }] })).toEqual({
      code: 'UNSUPPORTED',
      message: expect.stringMatching(/^policy.json: default\[0\].type: GPG .*signedBy/),
    });
    expect(err({ default: [{ type: 'sigstoreSigned', pki: {} }] })).toMatchObject({ code: 'UNSUPPORTED', message: expect.stringMatching(/default\[0\].pki/) });
    expect(err({ default: [{ type: 'sigstoreSigned', keyPath: '/k', keyPathz: 1 }] }).message).toMatch(/default\[0\]: unknown or unsupported field\(s\) "keyPathz"/);
    expect(err({ default: [{ type: 'sigstoreSigned', keyPath: '/k', keyData: 'AA==' }] }).message).toMatch(/exactly one of keyPath, keyPaths, keyData, keyDatas or fulcio/);
    expect(err({ default: [{ type: 'sigstoreSigned', fulcio: { caPath: '/ca', oidcIssuer: 'i', subjectEmail: 'e' } }] }).message).toMatch(/fulcio needs a Rekor public key/);
    expect(err({ default: [{ type: 'sigstoreSigned', keyPath: '/k', signedIdentity: { type: 'matchRepository', extra: 1 } }] }).message).toMatch(/signedIdentity: unknown or unsupported field/);
    expect(err({ default: [{ type: 'bogus' }] }).message).toMatch(/unknown requirement type "bogus"/);
    expect(err({ default: [] }).message).toMatch(/default: an empty list of requirements is not allowed/);
    expect(err({ transports: { docker: {} } }).message).toMatch(/default: is required/);
    expect(err({ default: ACCEPT, transports: { 'docker-daemon': { '': ACCEPT } } })).toMatchObject({ code: 'UNSUPPORTED', message: expect.stringMatching(/transports.docker-daemon/) });
    expect(err({ default: ACCEPT, transports: { docker: { 'not a scope!': ACCEPT } } }).message).toMatch(/transports.docker\["not a scope!"\]: not a valid scope/);
    expect(err({ default: ACCEPT, extra: 1 }).message).toMatch(/policy.json: extra: unknown field/);
    expect(() => parseContainersPolicy('{\n  "default": [\n    {"type": "reject"},\n  ]\n}', 'p.json')).toThrow(/p.json: not valid JSON \(line 4\)/);
  });
});

describe('containers-policy.json enforced by verify, policy check and install', () => {
  let reg: RegistryHandle;
  let dir: string;
  let keys: string;
  let signedDigest: string;
  const env = { ...process.env, KBUNDLE_PASSWORD: 'pw' };
  const cli = (args: string[]) => kbundleAsync(args, { env });
  const ok = async (args: string[]) => {
    const r = await cli(args);
    expect(r.code, `${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
    return r.stdout;
  };

  beforeAll(async () => {
    reg = await startRegistry({ variant: 'open' });
    dir = tempDir();
    keys = tempDir();
    const out = join(tempDir(), 'oci');
    await buildTo(writeBundle(join(tempDir(), 'tools'), CONTAINER_SPEC, CONTAINER_FILES), { transport: 'oci', path: out, ref: 'b' }, { sourceDateEpoch: 0 });
    await ok(['push', `oci:${out}:b`, `${reg.host}/kairos/app:1.0`]);
    await ok(['push', `oci:${out}:b`, `${reg.host}/other/app:1.0`]);
    await ok(['key', 'generate', '--out', join(keys, 'release')]);
    await ok(['key', 'generate', '--out', join(keys, 'other')]);
    const signed = JSON.parse(await ok(['sign', `${reg.host}/kairos/app:1.0`, '--key', join(keys, 'release.key'), '--json'])) as { digest: string };
    signedDigest = signed.digest;
    // A mirror: the same image and its signatures copied to another repository.
    await ok(['copy', `${reg.host}/kairos/app:1.0`, `${reg.host}/mirror/app:1.0`]);
  }, 300_000);
  afterAll(async () => {
    await reg?.stop();
    cleanupTempDirs();
  });

  const keyed = (extra: Record<string, unknown> = {}) => [{ type: 'sigstoreSigned', keyPath: join(keys, 'release.pub'), ...extra }];

  it('verify --policy: the scope and requirement that decided, accepted or refused', async () => {
    const p = policyFile(dir, { default: REJECT, transports: { docker: { [`${reg.host}/kairos`]: keyed({ signedIdentity: { type: 'matchRepository' } }) } } });
    const v = JSON.parse(await ok(['verify', `${reg.host}/kairos/app:1.0`, '--policy', p, '--json'])) as { accepted: boolean; scope: string; signers: unknown[] };
    expect(v).toMatchObject({ accepted: true, scope: `transports.docker["${reg.host}/kairos"]` });
    expect(v.signers.length).toBeGreaterThan(0);
    const human = await ok(['policy', 'check', `${reg.host}/kairos/app:1.0`, '--policy', p]);
    expect(human).toMatch(new RegExp(`scope: transports.docker\\["${reg.host}/kairos"\\]\\nrequires: sigstoreSigned \\(keyPath .*release.pub, signedIdentity matchRepository\\)`));

    const other = await cli(['policy', 'check', `${reg.host}/other/app:1.0`, '--policy', p]);
    expect(other.code).toBe(EXIT_CODES.REFUSED);
    expect(other.stderr).toMatch(/refused by .*: default is "reject"/);

    const wrongKey = policyFile(dir, { default: [{ type: 'sigstoreSigned', keyData: readFileSync(join(keys, 'other.pub')).toString('base64'), signedIdentity: { type: 'matchRepository' } }] });
    const w = await cli(['verify', `${reg.host}/kairos/app:1.0`, '--policy', wrongKey]);
    expect(w.code).toBe(EXIT_CODES.REFUSED);
    expect(w.stderr).toMatch(/policy .*default: default\[0\] sigstoreSigned/);
  });

  it('default signedIdentity matchRepoDigestOrExact: by digest yes, by tag no (cosign signs the repository)', async () => {
    const p = policyFile(dir, { default: keyed() });
    await ok(['verify', `${reg.host}/kairos/app@${signedDigest}`, '--policy', p]);
    const byTag = await cli(['verify', `${reg.host}/kairos/app:1.0`, '--policy', p]);
    expect(byTag.code).toBe(EXIT_CODES.REFUSED);
    expect(byTag.stderr).toMatch(/signedIdentity matchRepoDigestOrExact: the signature is for .*kairos\/app, not accepted for .*kairos\/app:1.0/);
  });

  it('a mirror: remapIdentity and exactRepository accept it, matchRepository does not', async () => {
    const mirror = `${reg.host}/mirror/app@${signedDigest}`;
    const remap = policyFile(dir, { default: keyed({ signedIdentity: { type: 'remapIdentity', prefix: `${reg.host}/mirror`, signedPrefix: `${reg.host}/kairos` } }) });
    await ok(['verify', mirror, '--policy', remap]);
    const exact = policyFile(dir, { default: keyed({ signedIdentity: { type: 'exactRepository', dockerRepository: `${reg.host}/kairos/app` } }) });
    await ok(['verify', mirror, '--policy', exact]);
    const repo = policyFile(dir, { default: keyed({ signedIdentity: { type: 'matchRepository' } }) });
    const r = await cli(['verify', mirror, '--policy', repo]);
    expect(r.code).toBe(EXIT_CODES.REFUSED);
  });

  // containers-policy.json names no CT log, and sigstore-js checks every SCT a certificate embeds
  // against the trusted root's CT logs: a Fulcio certificate (the stand-in's, like the real one's,
  // carries an SCT) is refused, saying why. Keyless images verify with the YAML policy and a full
  // trusted root until kbundle checks the chain without the SCT (README, node trust policy).
  it('fulcio + Rekor keys: the requirement is built from the policy, and a certificate with an SCT is refused naming the SCT', async () => {
    const stack = await startSigstoreStack();
    try {
      const ref = `${reg.host}/kairos/keyless:1`;
      await ok(['copy', `${reg.host}/kairos/app:1.0`, ref, '--no-signatures']);
      const token = stack.token('release@example.com', 'https://issuer.example');
      await ok(['sign', ref, '--identity-token', token, '--fulcio-url', stack.url, '--rekor-url', stack.url]);
      const root = stack.trustedRoot as { tlogs: { publicKey: { rawBytes: string } }[]; certificateAuthorities: { certChain: { certificates: { rawBytes: string }[] } }[] };
      const caPem = `-----BEGIN CERTIFICATE-----\n${root.certificateAuthorities[0]!.certChain.certificates[0]!.rawBytes.replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE-----\n`;
      const rekorPem = createPublicKey({ key: Buffer.from(root.tlogs[0]!.publicKey.rawBytes, 'base64'), format: 'der', type: 'spki' })
        .export({ format: 'pem', type: 'spki' })
        .toString();
      const fulcio = (subjectEmail: string) =>
        policyFile(dir, {
          default: [
            {
              type: 'sigstoreSigned',
              fulcio: { caData: Buffer.from(caPem).toString('base64'), oidcIssuer: 'https://issuer.example', subjectEmail },
              rekorPublicKeyData: Buffer.from(rekorPem).toString('base64'),
              signedIdentity: { type: 'matchRepository' },
            },
          ],
        });
      const r = await cli(['policy', 'check', ref, '--policy', fulcio('release@example.com')]);
      expect(r.code).toBe(EXIT_CODES.REFUSED);
      expect(r.stdout).toMatch(/requires: sigstoreSigned \(fulcio release@example.com \(https:\/\/issuer.example\), Rekor, signedIdentity matchRepository\)/);
      expect(r.stderr).toMatch(/SCT verification failed/);
      expect(r.stderr).not.toMatch(/internal error/i);
    } finally {
      await stack.stop();
    }
  });

  it("install applies the node's own policy under --root: refused ones write nothing", async () => {
    const root = tempDir();
    mkdirSync(join(root, 'usr/local/etc/kbundle'), { recursive: true });
    // The node's policy names node paths: its keyPath is read under --root (test/node-policy-paths.test.ts).
    writeFileSync(join(root, 'usr/local/etc/kbundle/release.pub'), readFileSync(join(keys, 'release.pub')));
    writeFileSync(
      join(root, 'usr/local/etc/kbundle/policy.json'),
      JSON.stringify({
        default: REJECT,
        transports: { docker: { [`${reg.host}/kairos`]: [{ type: 'sigstoreSigned', keyPath: '/usr/local/etc/kbundle/release.pub', signedIdentity: { type: 'matchRepository' } }] } },
      }),
    );
    const before = readdirSync(root, { recursive: true }).sort();
    const refused = await cli(['install', `container://${reg.host}/other/app:1.0`, '--root', root]);
    expect(refused.code).toBe(EXIT_CODES.REFUSED);
    expect(readdirSync(root, { recursive: true }).sort()).toEqual(before);
    await ok(['install', `container://${reg.host}/kairos/app:1.0`, '--root', root]);
    expect(readFileSync(join(root, 'usr/local/share/demo/a.txt'), 'utf8')).toBe('alpha\n');
    // insecureAcceptAnything for a scope: installed without any signature.
    const open = policyFile(dir, { default: REJECT, transports: { docker: { [`${reg.host}/other/app`]: ACCEPT } } });
    const root2 = tempDir();
    await ok(['install', `container://${reg.host}/other/app:1.0`, '--root', root2, '--policy', open]);
    expect(existsSync(join(root2, 'usr/local/bin/tool'))).toBe(true);
  });

  it('bad policy files: clear errors with the field or line, exit codes by kind', async () => {
    const missing = await cli(['verify', `${reg.host}/kairos/app:1.0`, '--policy', join(dir, 'nope.json')]);
    expect(missing.code).toBe(EXIT_CODES.NOT_FOUND);
    expect(missing.stderr).toMatch(/nope.json: cannot read the trust policy \(ENOENT\)/);
    const gpg = policyFile(dir, { default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: '/k' }] });
    const g = await cli(['install', `container://${reg.host}/kairos/app:1.0`, '--root', tempDir(), '--policy', gpg]);
    expect(g.code).toBe(EXIT_CODES.UNSUPPORTED);
    expect(g.stderr).toMatch(/default\[0\].type: GPG/);
    const broken = join(dir, 'broken.json');
    writeFileSync(broken, '{\n  "default": [\n    {"type": "reject"}\n  \n');
    const b = await cli(['policy', 'check', `${reg.host}/kairos/app:1.0`, '--policy', broken]);
    expect(b.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(b.stderr).toMatch(/broken.json: not valid JSON/);
    expect(b.stderr).not.toMatch(/\n\s+at /);
    const none = await cli(['policy', 'check', `${reg.host}/kairos/app:1.0`, '--root', tempDir()]);
    expect(none.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(none.stderr).toMatch(/no --policy given and the node has no usr\/local\/etc\/kbundle\/policy.json/);
  });
});
