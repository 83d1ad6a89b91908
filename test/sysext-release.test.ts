import { describe, expect, it } from 'vitest';
import { parseImagePolicy, policyFor } from '../src/sysext/policy.js';
import { formatExtensionRelease, imageNameFromFile, matchExtensionRelease, parseReleaseFile, validateExtensionName } from '../src/sysext/release.js';
import { pickExtension, fileNameFromUri, parseInstallUri } from '../src/sysext/manage.js';
import { systemdArch } from '../src/kairos/extensions.js';
import { uuidV5, defaultSeed } from '../src/sysext/build.js';

const host = (text: string, systemdVersion = 252, architecture = 'x86-64', scope = 'system') => ({ fields: parseReleaseFile(text), architecture, scope, systemdVersion });
const ext = (text: string) => parseReleaseFile(text);

describe('extension-release matching (systemd extension_release_validate)', () => {
  // Rules from systemd-sysext(8) / os-release(5) and src/shared/extension-util.c: scope, arch, ID/_any,
  // SYSEXT_LEVEL when both sides have it, else VERSION_ID.
  const debian12 = 'ID=debian\nVERSION_ID="12"\n';
  const cases: [string, string, string, boolean, RegExp][] = [
    ['exact ID and VERSION_ID', debian12, 'ID=debian\nVERSION_ID=12\n', true, /VERSION_ID=12 match/],
    ['_any skips version checks', debian12, 'ID=_any\n', true, /_any/],
    ['_any still checks ARCHITECTURE', debian12, 'ID=_any\nARCHITECTURE=arm64\n', false, /ARCHITECTURE=arm64, but the node is x86-64/],
    ['ARCHITECTURE=_any', debian12, 'ID=_any\nARCHITECTURE=_any\n', true, /_any/],
    ['matching ARCHITECTURE', debian12, 'ID=debian\nVERSION_ID=12\nARCHITECTURE=x86-64\n', true, /match/],
    ['other OS', debian12, 'ID=fedora\nVERSION_ID=12\n', false, /ID=fedora, but the node's os-release has ID=debian/],
    ['version mismatch', debian12, 'ID=debian\nVERSION_ID=11\n', false, /VERSION_ID=11, but the node has VERSION_ID=12/],
    ['missing VERSION_ID', debian12, 'ID=debian\n', false, /no VERSION_ID=/],
    ['missing ID', debian12, 'VERSION_ID=12\n', false, /has no ID=/],
    ['empty release file', debian12, '', false, /carries no fields/],
    ['level match wins over VERSION_ID', 'ID=kairos\nVERSION_ID=3.1\nSYSEXT_LEVEL=1.0\n', 'ID=kairos\nSYSEXT_LEVEL=1.0\nVERSION_ID=9\n', true, /SYSEXT_LEVEL=1.0 match/],
    ['level mismatch', 'ID=kairos\nVERSION_ID=3.1\nSYSEXT_LEVEL=1.0\n', 'ID=kairos\nSYSEXT_LEVEL=2.0\n', false, /SYSEXT_LEVEL=2.0, but the node has SYSEXT_LEVEL=1.0/],
    ['level only on the extension: VERSION_ID decides', debian12, 'ID=debian\nSYSEXT_LEVEL=1\nVERSION_ID=12\n', true, /VERSION_ID=12 match/],
    ['rolling release host', 'ID=arch\n', 'ID=arch\n', true, /rolling release/],
    ['scope excludes system', debian12, 'ID=_any\nSYSEXT_SCOPE=initrd portable\n', false, /SYSEXT_SCOPE=initrd portable does not include "system"/],
    ['scope includes system', debian12, 'ID=_any\nSYSEXT_SCOPE="initrd system"\n', true, /_any/],
    ['ID_LIKE is not matched by 252', 'ID=ubuntu\nID_LIKE=debian\nVERSION_ID=24.04\n', 'ID=debian\nVERSION_ID=24.04\n', false, /ID=debian, but the node's os-release has ID=ubuntu/],
  ];
  it.each(cases)('%s', (_n, os, rel, ok, why) => {
    const r = matchExtensionRelease('foo', 'sysext', host(os), ext(rel));
    expect(r.ok).toBe(ok);
    expect(r.reason).toMatch(why);
  });

  it('newer systemd (≥258) also matches ID_LIKE', () => {
    const r = matchExtensionRelease('foo', 'sysext', host('ID=ubuntu\nID_LIKE=debian\nVERSION_ID=24.04\n', 258), ext('ID=debian\nVERSION_ID=24.04\n'));
    expect(r.ok).toBe(true);
  });

  it('confext uses CONFEXT_LEVEL and CONFEXT_SCOPE', () => {
    expect(matchExtensionRelease('c', 'confext', host('ID=x\nVERSION_ID=1\nCONFEXT_LEVEL=7\n'), ext('ID=x\nCONFEXT_LEVEL=8\n')).reason).toMatch(/CONFEXT_LEVEL=8/);
    expect(matchExtensionRelease('c', 'confext', host('ID=x\nVERSION_ID=1\n'), ext('ID=_any\nCONFEXT_SCOPE=initrd\n')).ok).toBe(false);
  });
});

describe('image names and extension names', () => {
  it('derives the name systemd looks for, per version', () => {
    expect(imageNameFromFile('foo.sysext.raw', 252)).toBe('foo.sysext');
    expect(imageNameFromFile('foo.raw', 252)).toBe('foo');
    expect(imageNameFromFile('foo.sysext.raw', 256)).toBe('foo');
    expect(imageNameFromFile('foo_1.2.raw', 256)).toBe('foo');
    expect(imageNameFromFile('bar.confext.raw', 257)).toBe('bar');
  });
  it('refuses names systemd or Kairos naming would break', () => {
    expect(() => validateExtensionName('ok-name.2')).not.toThrow();
    for (const bad of ['', 'a/b', 'with_underscore', 'a+b', '.hidden', 'foo.raw', 'foo.sysext', 'UPPER spaces']) expect(() => validateExtensionName(bad)).toThrow();
  });
  it('writes the release file from flags, ID=_any by default, fixed order', () => {
    expect(formatExtensionRelease('sysext', {})).toBe('ID=_any\n');
    expect(formatExtensionRelease('sysext', { id: 'debian', versionId: '12', level: '1.0', architecture: 'x86-64', reloadManager: true })).toBe(
      'ID=debian\nVERSION_ID=12\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\nEXTENSION_RELOAD_MANAGER=1\n',
    );
    expect(formatExtensionRelease('confext', { level: '2' })).toBe('ID=_any\nCONFEXT_LEVEL=2\n');
    expect(() => formatExtensionRelease('sysext', { id: 'Debian' })).toThrow(/--id/);
  });
  it('parses os-release quoting like systemd', () => {
    const f = parseReleaseFile(`# c\nNAME="Debian GNU/Linux"\nID=debian\nVERSION_ID='12'\nX="a\\"b"\n bad line\n`);
    expect(Object.fromEntries(f)).toEqual({ NAME: 'Debian GNU/Linux', ID: 'debian', VERSION_ID: '12', X: 'a"b' });
  });
  it('maps architectures to systemd names', () => {
    expect(systemdArch('amd64')).toBe('x86-64');
    expect(systemdArch('linux/arm64')).toBe('arm64');
    expect(systemdArch('x86-64')).toBe('x86-64');
    expect(() => systemdArch('sparc')).toThrow(/unknown architecture/);
  });
  it("uses AuroraBoot's fixed seed (uuid v5 of kairos-sysext in the DNS namespace)", () => {
    // Go: uuid.NewV5(uuid.NamespaceDNS, "www.example.com") = 2ed6657d-e927-568b-95e1-2665a8aea6a2 (RFC 4122 test vector)
    expect(uuidV5('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'www.example.com')).toBe('2ed6657d-e927-568b-95e1-2665a8aea6a2');
    expect(defaultSeed('sysext')).toBe(uuidV5('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'kairos-sysext'));
  });
});

describe('image policies', () => {
  it('parses Kairos policies and the special ones', () => {
    const p = parseImagePolicy('root=verity+absent:usr=verity+absent');
    expect([...policyFor(p, 'root')]).toEqual(['verity', 'absent']);
    expect(policyFor(p, 'home').has('unused')).toBe(true); // unlisted designators default to ignore
    expect([...policyFor(parseImagePolicy('~'), 'root')]).toEqual(['absent']);
    expect(policyFor(parseImagePolicy('=signed+absent'), 'usr').has('signed')).toBe(true);
    expect(() => parseImagePolicy('root=bogus')).toThrow(/unknown policy flag/);
    expect(() => parseImagePolicy('rootfs=verity')).toThrow(/unknown partition designator/);
  });
});

describe('kairos-agent naming rules, made strict', () => {
  const names = ['foo.sysext.raw', 'foobar.sysext.raw', 'baz.raw'];
  it('prefers an exact name, then the regular expression, and refuses ambiguity', () => {
    expect(pickExtension(names, 'foo', 'sysext', 'x')).toBe('foo.sysext.raw');
    expect(pickExtension(names, 'foo.sysext.raw', 'sysext', 'x')).toBe('foo.sysext.raw');
    expect(pickExtension(names, 'baz', 'sysext', 'x')).toBe('baz.raw');
    expect(pickExtension(names, 'bar', 'sysext', 'x')).toBe('foobar.sysext.raw');
    expect(() => pickExtension(names, 'sysext', 'sysext', 'x')).toThrow(/matches 2 extensions/);
    expect(pickExtension(names, 'nope', 'sysext', 'x')).toBeUndefined();
  });
  it('names downloads like kairos-agent (query strings dropped)', () => {
    expect(fileNameFromUri('http://host/path/foo.sysext.raw?token=abc123')).toBe('foo.sysext.raw');
    expect(fileNameFromUri('https://h/a/b/c/bar.confext.raw?x=1&y=2')).toBe('bar.confext.raw');
  });
  it('parses the URI schemes kairos-agent accepts', () => {
    expect(parseInstallUri('file:/var/x.raw')).toEqual({ kind: 'file', path: '/var/x.raw' });
    expect(parseInstallUri('file:///var/x.raw')).toEqual({ kind: 'file', path: '/var/x.raw' });
    expect(parseInstallUri('oci:quay.io/k/foo:1')).toEqual({ kind: 'image', ref: 'quay.io/k/foo:1', scheme: 'oci' });
    expect(parseInstallUri('docker://quay.io/k/foo:1')).toEqual({ kind: 'image', ref: 'quay.io/k/foo:1', scheme: 'docker' });
    expect(() => parseInstallUri('ftp://x/y.raw')).toThrow(/unsupported scheme/);
    expect(() => parseInstallUri('/abs/path.raw')).toThrow(/no scheme/);
  });
});
