import { afterAll, describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { parseChallenges } from '../src/registry/challenge.js';
import { schemePlan } from '../src/registry/connection.js';
import { resolveCredentials } from '../src/registry/credentials.js';
import { apiHost, formatReference, isLoopback, manifestReference, parseReference, pinnedReference } from '../src/registry/reference.js';
import { referrersTag } from '../src/attach/tags.js';
import { nextLink } from '../src/registry/tags.js';
import { parseImageArgument } from '../src/store/open.js';
import { mkdtempSync, writeFileSync, chmodSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const D = `sha256:${'a'.repeat(64)}`;

describe('image references as users write them', () => {
  it.each([
    ['alpine', { registry: 'docker.io', repository: 'library/alpine' }],
    ['alpine:3.20', { registry: 'docker.io', repository: 'library/alpine', tag: '3.20' }],
    ['docker.io/alpine', { registry: 'docker.io', repository: 'library/alpine' }],
    ['index.docker.io/library/alpine:edge', { registry: 'docker.io', repository: 'library/alpine', tag: 'edge' }],
    ['kairos/metallb:0.14.9', { registry: 'docker.io', repository: 'kairos/metallb', tag: '0.14.9' }],
    ['quay.io/kairos/metallb', { registry: 'quay.io', repository: 'kairos/metallb' }],
    ['localhost/foo', { registry: 'localhost', repository: 'foo' }],
    ['localhost:5000/a/b/c:v1', { registry: 'localhost:5000', repository: 'a/b/c', tag: 'v1' }],
    ['127.0.0.1:5000/kairos/metallb:0.14.9', { registry: '127.0.0.1:5000', repository: 'kairos/metallb', tag: '0.14.9' }],
    ['[::1]:5000/foo:bar', { registry: '[::1]:5000', repository: 'foo', tag: 'bar' }],
    [`ghcr.io/o/r@${D}`, { registry: 'ghcr.io', repository: 'o/r', digest: D }],
    [`ghcr.io/o/r:v1@${D}`, { registry: 'ghcr.io', repository: 'o/r', tag: 'v1', digest: D }],
    ['docker://127.0.0.1:5000/x:y', { registry: '127.0.0.1:5000', repository: 'x', tag: 'y' }],
    ['reg.example.com/a__b/c-d/e.f_g:T_1.2-3', { registry: 'reg.example.com', repository: 'a__b/c-d/e.f_g', tag: 'T_1.2-3' }],
    ['Registry/foo', { registry: 'Registry', repository: 'foo' }],
  ])('%s', (input, want) => {
    expect(parseReference(input)).toEqual(want);
  });

  it.each([
    ['', 'empty'],
    ['UPPER', 'lowercase'],
    ['foo/Bar', 'lowercase'],
    ['docker.io/Library/alpine', 'lowercase'],
    ['foo:', 'tag'],
    ['foo:-bad', 'tag'],
    [`foo:${'x'.repeat(129)}`, 'tag'],
    ['foo@sha256:abc', 'digest'],
    ['foo@md5:0123', 'digest'],
    ['a//b', 'empty path component'],
    ['a/b/', 'empty path component'],
    ['host:99999/foo', 'out of range'],
    ['https://registry.example.com/foo', 'scheme'],
    ['foo bar', 'whitespace'],
    ['127.0.0.1:5000/', 'no repository'],
    ['a/-b', 'component'],
    [`reg.io/${'a'.repeat(250)}`, 'longer than'],
  ])('rejects %j (%s)', (input, why) => {
    let err: unknown;
    try {
      parseReference(input, 'ref');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toContain('not a valid image reference');
    expect((err as Error).message.toLowerCase()).toContain(why.toLowerCase());
    expect((err as UserError).hint).toBeTruthy();
  });

  it('formats, pins and picks what goes into the manifest URL', () => {
    const r = parseReference('127.0.0.1:5000/kairos/metallb:0.14.9');
    expect(formatReference(r)).toBe('127.0.0.1:5000/kairos/metallb:0.14.9');
    expect(pinnedReference(r, D)).toBe(`127.0.0.1:5000/kairos/metallb@${D}`);
    expect(manifestReference(r)).toBe('0.14.9');
    expect(manifestReference(parseReference('x/y'))).toBe('latest');
    expect(manifestReference(parseReference(`x/y:t@${D}`))).toBe(D);
    expect(formatReference(parseReference('alpine'))).toBe('docker.io/library/alpine');
    expect(apiHost('docker.io')).toBe('registry-1.docker.io');
  });

  it('knows loopback hosts and which scheme each registry gets', () => {
    for (const h of ['localhost', 'localhost:5000', '127.0.0.1:5000', '127.1.2.3', '[::1]:5000']) expect(isLoopback(h)).toBe(true);
    for (const h of ['10.0.0.1:5000', 'example.com', 'localhost.example.com', '128.0.0.1']) expect(isLoopback(h)).toBe(false);
    expect(schemePlan('127.0.0.1:5000', {}).kind).toBe('https-then-http');
    expect(schemePlan('reg.lan:5000', {}).kind).toBe('https');
    expect(schemePlan('reg.lan:5000', { insecureRegistries: ['reg.lan'] }).kind).toBe('insecure');
    expect(schemePlan('reg.lan:5000', { insecureRegistries: ['reg.lan:5000'] }).kind).toBe('insecure');
    expect(schemePlan('reg.lan:5000', { env: { KBUNDLE_INSECURE_REGISTRIES: 'x, reg.lan:5000' } }).kind).toBe('insecure');
    expect(schemePlan('reg.lan:5000', { plainHttp: true }).kind).toBe('http');
  });

  it('splits image arguments: transports, bare references, skopeo docker-archive names', () => {
    expect(parseImageArgument('oci:out/oci:v1')).toEqual({ transport: 'oci', path: 'out/oci', ref: 'v1' });
    expect(parseImageArgument('127.0.0.1:5000/a:b')).toEqual({ transport: 'docker', ref: '127.0.0.1:5000/a:b' });
    expect(parseImageArgument('docker://127.0.0.1:5000/a:b')).toEqual({ transport: 'docker', ref: '127.0.0.1:5000/a:b' });
    expect(parseImageArgument('docker-archive:out.tar:metallb:0.14.9')).toEqual({ transport: 'docker-archive', path: 'out.tar', ref: 'metallb:0.14.9' });
    expect(parseImageArgument('docker-archive:out.tar')).toEqual({ transport: 'docker-archive', path: 'out.tar', ref: '' });
    expect(() => parseImageArgument('Bad Ref')).toThrow(/not a valid image reference/);
  });
});

describe('registry protocol details', () => {
  it('parses WWW-Authenticate challenges', () => {
    expect(parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"')).toEqual([
      { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' } },
    ]);
    expect(parseChallenges('Basic realm="kbundle test"')).toEqual([{ scheme: 'basic', params: { realm: 'kbundle test' } }]);
    const two = parseChallenges('Basic realm="a, b", Bearer realm="http://127.0.0.1:1/token",scope="repository:x:pull,push",error="insufficient_scope"');
    expect(two.map((c) => c.scheme)).toEqual(['basic', 'bearer']);
    expect(two[0]!.params.realm).toBe('a, b');
    expect(two[1]!.params.scope).toBe('repository:x:pull,push');
    expect(two[1]!.params.error).toBe('insufficient_scope');
    expect(parseChallenges('Bearer realm="a\\"b"')[0]!.params.realm).toBe('a"b');
    expect(parseChallenges(undefined)).toEqual([]);
  });

  it('follows Link rel="next" and names the referrers fallback tag', () => {
    expect(nextLink('</v2/r/tags/list?last=b&n=2>; rel="next"')).toBe('/v2/r/tags/list?last=b&n=2');
    expect(nextLink('<https://x/a>; rel="prev", <https://x/b>; rel=next')).toBe('https://x/b');
    expect(nextLink(undefined)).toBeUndefined();
    expect(referrersTag(D)).toBe(`sha256-${'a'.repeat(64)}`);
  });
});

describe('credentials', () => {
  const home = mkdtempSync(join(tmpdir(), 'kbundle-creds-'));
  afterAll(() => rmSync(home, { recursive: true, force: true }));
  const cfgDir = join(home, '.docker');
  mkdirSync(cfgDir);
  const b64 = (s: string) => Buffer.from(s).toString('base64');

  it('prefers flags, then KBUNDLE_REGISTRY_* env, then the docker config', async () => {
    writeFileSync(join(cfgDir, 'config.json'), JSON.stringify({ auths: { 'https://reg.lan:5000/v1/': { auth: b64('cfguser:cfg:pw') } } }));
    const env = { DOCKER_CONFIG: cfgDir } as NodeJS.ProcessEnv;
    expect(await resolveCredentials('reg.lan:5000', { env })).toMatchObject({ username: 'cfguser', password: 'cfg:pw' });
    expect(await resolveCredentials('other:5000', { env })).toBeUndefined();
    expect(await resolveCredentials('reg.lan:5000', { env: { ...env, KBUNDLE_REGISTRY_USERNAME: 'e', KBUNDLE_REGISTRY_PASSWORD: 'p' } })).toMatchObject({
      username: 'e',
      password: 'p',
      source: 'KBUNDLE_REGISTRY_USERNAME',
    });
    expect(await resolveCredentials('reg.lan:5000', { env, username: 'f', password: 'q' })).toMatchObject({ username: 'f', source: '--username' });
    await expect(resolveCredentials('reg.lan:5000', { env: { ...env, KBUNDLE_REGISTRY_USERNAME: 'only' } })).rejects.toThrow(/go together/);
  });

  it('maps docker.io to the index.docker.io key and reads identity tokens', async () => {
    writeFileSync(join(cfgDir, 'config.json'), JSON.stringify({ auths: { 'https://index.docker.io/v1/': { identitytoken: 'refresh-me' } } }));
    expect(await resolveCredentials('docker.io', { env: { DOCKER_CONFIG: cfgDir } })).toMatchObject({ identityToken: 'refresh-me' });
  });

  it('asks docker-credential-<helper> (credHelpers, then credsStore)', async () => {
    const bin = join(home, 'bin');
    mkdirSync(bin, { recursive: true });
    const helper = join(bin, 'docker-credential-fake');
    writeFileSync(
      helper,
      '#!/bin/sh\nread host\nif [ "$host" = "reg.lan:5000" ]; then echo "{\\"Username\\":\\"h\\",\\"Secret\\":\\"s3\\"}"; else echo "credentials not found in native keychain"; exit 1; fi\n',
    );
    chmodSync(helper, 0o755);
    const env = { DOCKER_CONFIG: cfgDir, PATH: `${bin}:${process.env.PATH}` } as NodeJS.ProcessEnv;
    writeFileSync(join(cfgDir, 'config.json'), JSON.stringify({ credHelpers: { 'reg.lan:5000': 'fake' } }));
    expect(await resolveCredentials('reg.lan:5000', { env })).toMatchObject({ username: 'h', password: 's3', source: 'docker-credential-fake' });
    writeFileSync(join(cfgDir, 'config.json'), JSON.stringify({ auths: { 'reg.lan:5000': {} }, credsStore: 'fake' }));
    expect(await resolveCredentials('reg.lan:5000', { env })).toMatchObject({ username: 'h' });
    expect(await resolveCredentials('nope:1', { env })).toBeUndefined();
    writeFileSync(join(cfgDir, 'config.json'), JSON.stringify({ credsStore: 'missing' }));
    await expect(resolveCredentials('reg.lan:5000', { env })).rejects.toThrow(/docker-credential-missing .*not installed/);
  });
});
