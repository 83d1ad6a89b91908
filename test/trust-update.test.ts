/**
 * `kbundle trust update` against a TUF repository served on 127.0.0.1 (test/helpers/tuf-repo.ts):
 * first update from an out-of-band root, no-op and real updates, root rotation, and refusal of
 * expired, rolled-back, badly signed and tampered metadata — the trusted root in use never changes
 * on a refusal.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { mirrorDir } from '../src/trust/tuf.js';
import { kbundleInProcess } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { startTufRepo, type TufRepo } from './helpers/tuf-repo.js';

/** A small but schema-valid trusted root (what the TUF target must be). */
function trustedRoot(tag: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
      tlogs: [
        {
          baseUrl: `https://rekor.${tag}.example`,
          hashAlgorithm: 'SHA2_256',
          publicKey: { rawBytes: Buffer.from(tag).toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start: '2024-01-01T00:00:00Z' } },
          logId: { keyId: Buffer.from(`id-${tag}`).toString('base64') },
        },
      ],
      certificateAuthorities: [],
      ctlogs: [],
      timestampAuthorities: [],
    }),
  );
}

let repo: TufRepo;
let cache: string;
let rootFile: string;

beforeEach(async () => {
  repo = await startTufRepo({ 'trusted_root.json': trustedRoot('one') });
  cache = tempDir();
  rootFile = join(tempDir(), 'root.json');
  writeFileSync(rootFile, repo.rootJson());
});
afterEach(async () => {
  await repo?.stop();
});
afterAll(() => cleanupTempDirs());

const update = (...extra: string[]) => kbundleInProcess(['trust', 'update', '--mirror', repo.url, '--cache-dir', cache, '--json', ...extra]);
const cached = () => readFileSync(join(cache, 'trusted_root.json'));

describe('trust update from a local TUF repository', () => {
  it('seeds from --tuf-root, writes the verified trusted root, and `trust show` reports it', async () => {
    const r = await update('--tuf-root', rootFile);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, any>;
    expect(out).toMatchObject({ mirror: repo.url, changed: true, versions: { root: 1, timestamp: 1, snapshot: 1, targets: 1 } });
    expect(cached().equals(trustedRoot('one'))).toBe(true);
    expect(repo.requests).toEqual(['2.root.json', 'timestamp.json', '1.snapshot.json', '1.targets.json', expect.stringMatching(/^targets\/[0-9a-f]{64}\.trusted_root\.json$/)]);
    const show = await kbundleInProcess(['trust', 'show', '--cache-dir', cache, '--json']);
    expect(show.code).toBe(0);
    expect(JSON.parse(show.stdout)).toMatchObject({ source: join(cache, 'trusted_root.json'), state: { mirror: repo.url }, tlogs: [{ baseUrl: 'https://rekor.one.example' }] });
  });

  it('a second run with nothing new is a no-op; a new target is picked up', async () => {
    expect((await update('--tuf-root', rootFile)).code).toBe(0);
    const again = await update();
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ changed: false, versions: { timestamp: 1 } });
    repo.setTarget('trusted_root.json', trustedRoot('two'));
    const r = await update();
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ changed: true, versions: { timestamp: 2, snapshot: 2, targets: 2 } });
    expect(cached().equals(trustedRoot('two'))).toBe(true);
  });

  it('under --root the cache lives in <root>/usr/local/var/lib/kbundle/trust', async () => {
    const node = tempDir();
    const r = await kbundleInProcess(['trust', 'update', '--mirror', repo.url, '--tuf-root', rootFile, '--root', node], { env: { KBUNDLE_TRUST_CACHE: undefined } });
    expect(r.code).toBe(0);
    expect(readFileSync(join(node, 'usr/local/var/lib/kbundle/trust/trusted_root.json')).equals(trustedRoot('one'))).toBe(true);
    expect(existsSync(join(mirrorDir(join(node, 'usr/local/var/lib/kbundle/trust'), repo.url), 'timestamp.json'))).toBe(true);
  });

  it('follows a root rotation signed by the old and the new root keys', async () => {
    expect((await update('--tuf-root', rootFile)).code).toBe(0);
    repo.rotateRoot(['root', 'timestamp']);
    repo.setTarget('trusted_root.json', trustedRoot('rotated'));
    const r = await update();
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toMatchObject({ changed: true, versions: { root: 2 } });
    expect(cached().equals(trustedRoot('rotated'))).toBe(true);
    const kept = JSON.parse(readFileSync(join(mirrorDir(cache, repo.url), 'root.json'), 'utf8')) as { signed: { version: number } };
    expect(kept.signed.version).toBe(2);
  });
});

describe('trust update refuses bad metadata and keeps the trusted root in use', () => {
  async function firstUpdate(): Promise<Buffer> {
    expect((await update('--tuf-root', rootFile)).code).toBe(0);
    return cached();
  }

  it('an expired timestamp', async () => {
    const before = await firstUpdate();
    repo.setTarget('trusted_root.json', trustedRoot('evil'), { timestampExpires: new Date(Date.now() - 60_000) });
    const r = await update();
    expect(r.code).toBe(EXIT_CODES.REFUSED);
    expect(r.stderr).toMatch(/trust update from http:\/\/127\.0\.0\.1:\d+ failed \(expired metadata\)/);
    expect(r.stderr).toMatch(/hint: the trusted root in use is unchanged/);
    expect(cached().equals(before)).toBe(true);
  });

  it('an expired snapshot', async () => {
    const before = await firstUpdate();
    repo.setTarget('trusted_root.json', trustedRoot('evil'), { snapshotExpires: new Date(Date.now() - 60_000) });
    const r = await update();
    expect(r.code).toBe(EXIT_CODES.REFUSED);
    expect(r.stderr).toMatch(/failed \(metadata\).*expired/i);
    expect(cached().equals(before)).toBe(true);
  });

  it('an expired root on first use', async () => {
    repo.rotateRoot([], { expires: new Date(Date.now() - 60_000) });
    writeFileSync(rootFile, repo.rootJson());
    const r = await update('--tuf-root', rootFile);
    expect(r.code).toBe(EXIT_CODES.REFUSED);
    expect(r.stderr).toMatch(/expired metadata/);
    expect(existsSync(join(cache, 'trusted_root.json'))).toBe(false);
  });

  it('a rolled-back timestamp (an older version than the cached one)', async () => {
    repo.publish(); // timestamp v2
    const before = await firstUpdate();
    repo.serve('timestamp.json', repo.history.timestamp[0]!); // v1, validly signed and not expired
    const r = await update();
    expect(r.code).toBe(EXIT_CODES.REFUSED);
    expect(r.stderr).toMatch(/failed \(rollback/);
    expect(cached().equals(before)).toBe(true);
  });

  it('a rolled-back snapshot (a new timestamp naming an older snapshot)', async () => {
    repo.publish();
    const before = await firstUpdate(); // snapshot v2 cached
    repo.publish(); // timestamp v3 → snapshot v3
    // Re-serve timestamp v3's bytes but snapshot v1 at the name v3 expects: the hash check catches it.
    repo.serve('3.snapshot.json', repo.history.snapshot[0]!);
    const r = await update();
    expect(r.code).toBe(EXIT_CODES.REFUSED);
    expect(cached().equals(before)).toBe(true);
  });

  it('a root rotation not signed by the old root', async () => {
    const before = await firstUpdate();
    repo.rotateRoot(['root'], { signWithOldRoot: false });
    repo.setTarget('trusted_root.json', trustedRoot('evil'));
    const r = await update();
    expect(r.code).toBe(EXIT_CODES.REFUSED);
    expect(r.stderr).toMatch(/failed \(signature threshold\)/);
    expect(cached().equals(before)).toBe(true);
  });

  it('a target whose bytes do not match the targets metadata', async () => {
    const before = await firstUpdate();
    const good = trustedRoot('two');
    repo.setTarget('trusted_root.json', good);
    repo.serve(`targets/${createHash('sha256').update(good).digest('hex')}.trusted_root.json`, trustedRoot('evi')); // same length, other bytes
    const r = await update();
    expect(r.code).toBe(EXIT_CODES.REFUSED);
    expect(r.stderr).toMatch(/failed \(length or hash\)/);
    expect(cached().equals(before)).toBe(true);
  });

  it('a verified target that is not a trusted root', async () => {
    const before = await firstUpdate();
    repo.setTarget('trusted_root.json', Buffer.from('{"tlogs": "nope"}'));
    const r = await update();
    expect(r.code).toBe(EXIT_CODES.REFUSED);
    expect(r.stderr).toMatch(/not a trusted root/);
    expect(cached().equals(before)).toBe(true);
  });

  it('a mirror never seen before without --tuf-root (no trust on first use)', async () => {
    const r = await update();
    expect(r.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(r.stderr).toMatch(/no TUF root for http:\/\/127\.0\.0\.1:\d+/);
    expect(r.stderr).toMatch(/--tuf-root/);
  });

  it('--tuf-root that is not a TUF root', async () => {
    writeFileSync(rootFile, '{"signed":{"_type":"targets","version":1},"signatures":[]}');
    const r = await update('--tuf-root', rootFile);
    expect(r.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(r.stderr).toMatch(/not a TUF root/);
  });

  it('a mirror that is down is a transient failure', async () => {
    await firstUpdate();
    await repo.stop();
    const r = await update('--timeout', '10');
    expect(r.code).toBe(EXIT_CODES.TRANSIENT);
    expect(r.stderr).toMatch(/trust update from .* failed/);
  });
});
