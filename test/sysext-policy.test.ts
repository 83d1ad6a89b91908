import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildSysext } from '../src/sysext/build.js';
import { checkImage } from '../src/sysext/check.js';
import { x509FromSignatureLists } from '../src/sysext/node-trust.js';
import { parseImagePolicy, partitionUse, policyFor } from '../src/sysext/policy.js';
import { parseReleaseFile } from '../src/sysext/release.js';
import { hostSystemdArch } from '../src/kairos/extensions.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { makeCert, makeTree, requireTools } from './fixtures/sysext/helpers.js';

afterAll(cleanupTempDirs);

const os = parseReleaseFile('ID=debian\nVERSION_ID=12\n');
const KAIROS = 'root=verity+absent:usr=verity+absent';
const TRUSTED_BOOT = 'root=signed+absent:usr=signed+absent';

describe('image policy lookups (systemd image-policy.c)', () => {
  it('defaults to ignore, derives verity partitions from their data partition, masks what cannot apply', () => {
    const k = parseImagePolicy(KAIROS);
    expect([...policyFor(k, 'home')].sort()).toEqual(['absent', 'unused']); // no default given: ignore
    expect([...policyFor(k, 'root-verity')].sort()).toEqual(['absent', 'unprotected']); // derived from root=verity+absent
    expect(partitionUse(k, 'root-verity-sig')).toBe('ignore'); // root does not ask for signed: default (ignore)
    const tb = parseImagePolicy(TRUSTED_BOOT);
    expect(partitionUse(tb, 'root-verity-sig')).toBe('use');
    expect(partitionUse(tb, 'root-verity')).toBe('use');
    // An explicit entry wins; protection flags make no sense on a verity partition and are dropped.
    expect([...policyFor(parseImagePolicy('root=verity:root-verity=verity'), 'root-verity')]).toEqual([]);
    expect(partitionUse(parseImagePolicy('root=verity:root-verity=absent'), 'root-verity')).toBe('refuse');
    // No use flag (or only GPT flag rules) means every use; "-" and "" are ignore, "~" absent.
    expect(policyFor(parseImagePolicy('root=read-only-on'), 'root').size).toBe(6);
    expect(policyFor(parseImagePolicy('root='), 'root').size).toBe(6);
    expect([...policyFor(parseImagePolicy('-'), 'root')].sort()).toEqual(['absent', 'unused']);
    expect(partitionUse(parseImagePolicy('~'), 'usr')).toBe('refuse');
    // Only root and usr know verity.
    expect(policyFor(parseImagePolicy('home=verity+signed+unprotected'), 'home').has('verity')).toBe(false);
    expect(() => parseImagePolicy('=open:=ignore')).toThrow(/default .* given twice/);
  });
});

describe('sysext check: the policy verdicts systemd would reach', () => {
  let unsigned: string;
  let signed: string;
  let plain: string;
  let keys: { key: string; cert: string };
  let other: { key: string; cert: string };
  beforeAll(async () => {
    requireTools('mksquashfs', 'systemd-repart', 'openssl');
    const tree = makeTree(join(tempDir(), 'tree'));
    keys = makeCert(tempDir(), 'kbundle-policy-db');
    other = makeCert(tempDir(), 'not-enrolled');
    const rel = { id: 'debian', versionId: '12' };
    unsigned = (await buildSysext({ name: 'demo', tree, outDir: tempDir(), release: rel })).path;
    signed = (await buildSysext({ name: 'demo', tree, outDir: tempDir(), release: rel, key: keys.key, cert: keys.cert })).path;
    plain = (await buildSysext({ name: 'demo', tree, outDir: tempDir(), release: rel, format: 'plain' })).path;
  });

  const cases: Array<[string, () => string, string, 'trusted' | 'other' | 'none', string | null, RegExp?]> = [
    ['unsigned DDI, Kairos default', () => unsigned, KAIROS, 'none', 'verity'],
    ['unsigned DDI, Trusted Boot', () => unsigned, TRUSTED_BOOT, 'trusted', null, /root=signed\+absent, but this image offers verity \(dm-verity without a signature/],
    ['signed DDI, Trusted Boot, enrolled certificate', () => signed, TRUSTED_BOOT, 'trusted', 'signed'],
    ['signed DDI, Trusted Boot, another certificate', () => signed, TRUSTED_BOOT, 'other', null, /signature is not trusted: .*not-enrolled/],
    ['signed DDI, Trusted Boot, no certificate', () => signed, TRUSTED_BOOT, 'none', null, /no trusted certificate given/],
    ['signed DDI, Kairos default: signature partition ignored', () => signed, KAIROS, 'other', 'verity'],
    ['signed DDI, signed or verity, untrusted signature: falls back to verity', () => signed, 'root=signed+verity+absent:usr=absent', 'other', 'verity'],
    // Default "open" makes the signature partition used, so the data counts as signed, which root=verity refuses.
    ['signed DDI, root=verity with default open', () => signed, 'root=verity:=open', 'trusted', null, /root=verity, but this image offers signed/],
    ['unsigned DDI, hash partition forbidden', () => unsigned, 'root=verity+absent:root-verity=absent', 'none', null, /root-verity=absent, but the image has a root-verity partition/],
    ['unsigned DDI, hash partition ignored: unprotected', () => unsigned, 'root=unprotected:root-verity=unused', 'none', 'unprotected'],
    ['unsigned DDI, root=unprotected (verity partition not wanted, ignored)', () => unsigned, 'root=unprotected', 'none', 'unprotected'],
    ['unsigned DDI, "*"', () => unsigned, '*', 'none', 'verity'],
    ['unsigned DDI, "~": nothing may exist', () => unsigned, '~', 'none', null, /root=absent, but the image has a root partition/],
    ['unsigned DDI, "-": everything ignored', () => unsigned, '-', 'none', null, /neither root nor usr is left to use/],
    ['unsigned DDI, usr required', () => unsigned, 'root=verity+absent:usr=verity', 'none', null, /usr=verity requires a usable usr partition, the image has none/],
    ['plain squashfs, Kairos default', () => plain, KAIROS, 'none', null, /offers unprotected \(a plain file system without dm-verity\)/],
    ['plain squashfs, encrypted only', () => plain, 'root=encrypted', 'none', null, /never LUKS-encrypted/],
    ['plain squashfs, root=unprotected+absent', () => plain, 'root=unprotected+absent', 'none', 'unprotected'],
  ];

  it.each(cases)('%s', async (_name, image, policy, certs, protection, reason) => {
    const c = await checkImage(image(), { osRelease: os, policy, certs: certs === 'trusted' ? [keys.cert] : certs === 'other' ? [other.cert] : [], arch: hostSystemdArch() });
    if (protection) {
      expect(c.reasons).toEqual([]);
      expect(c.ok).toBe(true);
      expect(c.protection).toBe(protection);
    } else {
      expect(c.ok).toBe(false);
      expect(c.reasons.join('\n')).toMatch(reason!);
    }
  });
});

describe('sysext check: renamed images and user.extension-release.strict', () => {
  /** A bare squashfs whose release files carry the given strict xattr values (undefined: none). */
  function imageWith(releases: Record<string, string | undefined>, fileName: string): string {
    const tree = makeTree(join(tempDir(), 'tree'));
    const relDir = join(tree, 'usr/lib/extension-release.d');
    mkdirSync(relDir, { recursive: true });
    for (const [name, strict] of Object.entries(releases)) {
      const f = join(relDir, `extension-release.${name}`);
      writeFileSync(f, 'ID=_any\n');
      if (strict !== undefined) execFileSync('setfattr', ['-n', 'user.extension-release.strict', '-v', strict, f]);
    }
    const out = join(tempDir(), fileName);
    execFileSync('mksquashfs', [join(tree, 'usr'), join(tree, 'opt'), out, '-noappend', '-all-root', '-quiet', '-no-progress']);
    return out;
  }
  const check = (path: string) => checkImage(path, { osRelease: os, policy: '*', arch: hostSystemdArch() });

  beforeAll(() => requireTools('mksquashfs', 'unsquashfs', 'setfattr', 'getfattr'));

  it('accepts the one release file tagged strict=0 under another image name', async () => {
    const c = await check(imageWith({ 'built-name': '0' }, 'renamed.raw'));
    expect(c.reasons).toEqual([]);
    expect(c.lines.map((l) => l.text).join('\n')).toMatch(/extension-release.built-name is tagged user.extension-release.strict=0: systemd uses it for the image name "renamed"/);
    // "false" is a false boolean to systemd as well
    expect((await check(imageWith({ 'built-name': 'false' }, 'renamed.raw'))).ok).toBe(true);
  });

  it('refuses a renamed image whose release file is strict (no xattr, or strict=1)', async () => {
    for (const strict of [undefined, '1']) {
      const c = await check(imageWith({ 'built-name': strict }, 'renamed.raw'));
      expect(c.ok).toBe(false);
      expect(c.reasons.join('\n')).toMatch(/looks for usr\/lib\/extension-release.d\/extension-release.renamed; the image has extension-release.built-name/);
    }
  });

  it('refuses two relaxed release files as ambiguous, but an exact name still wins', async () => {
    const c = await check(imageWith({ one: '0', two: 'no' }, 'renamed.raw'));
    expect(c.ok).toBe(false);
    expect(c.reasons.join('\n')).toMatch(/2 release files are tagged user.extension-release.strict=0 .*ambiguity/);
    expect((await check(imageWith({ one: '0', renamed: undefined }, 'renamed.raw'))).ok).toBe(true);
  });
});

describe('firmware signature lists (node trust)', () => {
  it('refuses truncated or inconsistent EFI signature lists with the variable named', () => {
    expect(() => x509FromSignatureLists(Buffer.alloc(10), 'db')).toThrow(/db: truncated EFI signature list at byte 0/);
    const bad = Buffer.alloc(28);
    bad.writeUInt32LE(4096, 16); // claims more than there is
    bad.writeUInt32LE(16 + 100, 24);
    expect(() => x509FromSignatureLists(bad, 'KEK')).toThrow(/KEK: malformed EFI signature list at byte 0/);
    expect(x509FromSignatureLists(Buffer.alloc(0), 'PK')).toEqual([]);
  });
});
