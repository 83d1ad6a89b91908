/**
 * The one image-argument parser (src/store/transport.ts) and the capabilities callers ask instead
 * of transport names: every accepted form, every rejected form with its message.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { KbError } from '../src/errors.js';
import {
  capabilitiesOf,
  formatLocation,
  hasTransportPrefix,
  isLayoutLocation,
  isRegistryLocation,
  localImageLocation,
  nodeImageLocation,
  parseImageArgument,
  transportOf,
} from '../src/store/transport.js';

const work = mkdtempSync(join(tmpdir(), 'kbundle-imgarg-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** The error a parse throws, with its code and hint. */
function failure(fn: () => unknown): KbError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(KbError);
    return e as KbError;
  }
  throw new Error('expected a failure');
}

describe('parseImageArgument: accepted forms', () => {
  it.each([
    ['oci:out/oci', { transport: 'oci', path: 'out/oci', ref: '' }],
    ['oci:out/oci:v1', { transport: 'oci', path: 'out/oci', ref: 'v1' }],
    ['oci:/abs/dir:metallb_0.14.9', { transport: 'oci', path: '/abs/dir', ref: 'metallb_0.14.9' }],
    // A colon followed by a path is part of the path, not a tag.
    ['oci:host:5000/dir', { transport: 'oci', path: 'host:5000/dir', ref: '' }],
    ['oci-archive:out.tar', { transport: 'oci-archive', path: 'out.tar', ref: '' }],
    ['oci-archive:out.tar:v2', { transport: 'oci-archive', path: 'out.tar', ref: 'v2' }],
    // skopeo: the docker-archive path ends at the first colon; the rest is name[:tag].
    ['docker-archive:out.tar', { transport: 'docker-archive', path: 'out.tar', ref: '' }],
    ['docker-archive:out.tar:metallb', { transport: 'docker-archive', path: 'out.tar', ref: 'metallb' }],
    ['docker-archive:out.tar:kairos/metallb:0.14.9', { transport: 'docker-archive', path: 'out.tar', ref: 'kairos/metallb:0.14.9' }],
    ['docker://127.0.0.1:5000/kairos/metallb:0.14.9', { transport: 'docker', ref: '127.0.0.1:5000/kairos/metallb:0.14.9' }],
    [`docker://127.0.0.1:5000/a@sha256:${'a'.repeat(64)}`, { transport: 'docker', ref: `127.0.0.1:5000/a@sha256:${'a'.repeat(64)}` }],
    ['127.0.0.1:5000/kairos/metallb:0.14.9', { transport: 'docker', ref: '127.0.0.1:5000/kairos/metallb:0.14.9' }],
    ['localhost/a', { transport: 'docker', ref: 'localhost/a' }],
    ['alpine', { transport: 'docker', ref: 'alpine' }],
  ])('%s', (arg, want) => {
    const loc = parseImageArgument(arg);
    expect(loc).toEqual(want);
    // Formatting and parsing again gives the same location (bare references gain docker://).
    expect(parseImageArgument(formatLocation(loc))).toEqual(loc);
  });
});

describe('parseImageArgument: rejected forms', () => {
  it.each([
    ['docker:127.0.0.1:5000/a', 'source', /source: "docker:127.0.0.1:5000\/a" must be docker:\/\/<registry>\/<repo>\[:tag\|@digest\]/],
    ['docker://', 'image', /must be docker:\/\//],
    ['docker://Bad/Upper', 'image', /not a valid image reference|lowercase/],
    ['oci:', '-o', /-o: "oci:" names no path/],
    ['oci-archive:', 'image', /names no path/],
    ['docker-archive:', 'image', /names no path/],
    ['Bad Ref', 'image', /not a valid image reference/],
    ['https://127.0.0.1:5000/a:b', 'image', /URL scheme/],
  ])('%s', (arg, what, message) => {
    const e = failure(() => parseImageArgument(arg, what));
    expect(e.code).toBe('INVALID_INPUT');
    expect(e.message).toMatch(message);
  });

  it('demands a transport where a bare reference would be a mistake (build -o out/oci)', () => {
    const e = failure(() => parseImageArgument('out/oci', '-o', { bare: false }));
    expect(e.message).toBe('-o: "out/oci" has no known transport');
    expect(e.hint).toMatch(/oci:<dir>\[:tag\], oci-archive:<file.tar>\[:tag\], docker-archive:<file.tar>\[:name:tag\] or docker:\/\//);
    expect(parseImageArgument('oci:out/oci', '-o', { bare: false })).toEqual({ transport: 'oci', path: 'out/oci', ref: '' });
  });

  it('tells a transport prefix from a path or a reference', () => {
    expect(['oci:x', 'oci-archive:x', 'docker-archive:x', 'docker://h/r'].map(hasTransportPrefix)).toEqual([true, true, true, true]);
    expect(['x/y', '127.0.0.1:5000/a', 'ocifoo:x', 'file:/x'].map(hasTransportPrefix)).toEqual([false, false, false, false]);
  });
});

describe('capabilities, not transport names', () => {
  it('says what each location can hold', () => {
    const caps = (arg: string) => capabilitiesOf(parseImageArgument(arg));
    expect(caps('oci:d')).toEqual({ multiPlatform: true, signatures: true, inPlace: true, remote: false });
    expect(caps('oci-archive:f.tar')).toEqual({ multiPlatform: true, signatures: true, inPlace: false, remote: false });
    expect(caps('docker-archive:f.tar')).toEqual({ multiPlatform: false, signatures: false, inPlace: false, remote: false });
    expect(caps('h.lan/r:t')).toEqual({ multiPlatform: true, signatures: true, inPlace: true, remote: true });
    expect(isRegistryLocation(parseImageArgument('h.lan/r:t'))).toBe(true);
    expect(isLayoutLocation(parseImageArgument('oci:d'))).toBe(true);
    expect(isLayoutLocation(parseImageArgument('oci-archive:d'))).toBe(false);
  });

  it('names what trust policies match', () => {
    const id = (arg: string) => {
      const loc = parseImageArgument(arg);
      return transportOf(loc).identity(loc);
    };
    expect(id('docker://127.0.0.1:5000/kairos/metallb:1')).toBe('127.0.0.1:5000/kairos/metallb');
    expect(id('alpine')).toBe('docker.io/library/alpine');
    expect(id('oci:/srv/layout:v1')).toBe('oci:/srv/layout');
  });
});

describe('node forms', () => {
  it('local_file targets: a directory is a layout (dir:tag picks one image), a file an archive', async () => {
    const dir = join(work, 'layout');
    mkdirSync(dir);
    const file = join(work, 'image.tar');
    writeFileSync(file, '');
    expect(await localImageLocation(dir, 't')).toEqual({ transport: 'oci', path: dir, ref: '' });
    expect(await localImageLocation(`${dir}:v1`, 't')).toEqual({ transport: 'oci', path: dir, ref: 'v1' });
    expect(await localImageLocation(file, 't')).toEqual({ transport: 'docker-archive', path: file, ref: '' });
    const missing = await localImageLocation(join(work, 'nope'), 'run://x').catch((e: unknown) => e as KbError);
    expect(missing).toBeInstanceOf(KbError);
    expect((missing as KbError).code).toBe('NOT_FOUND');
    expect((missing as KbError).message).toBe(`run://x: local file ${join(work, 'nope')} not found`);
  });

  it('kairos-agent sources: oci:/docker:/container: are registry references unless a local layout is named', async () => {
    const dir = join(work, 'agent-layout');
    mkdirSync(dir);
    writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    expect(await nodeImageLocation('oci', dir, 'install')).toEqual({ transport: 'oci', path: dir, ref: '' });
    expect(await nodeImageLocation('oci', `${dir}:v1`, 'install')).toEqual({ transport: 'oci', path: dir, ref: 'v1' });
    expect(await nodeImageLocation('oci', 'quay.io/kairos/ext:v1', 'install')).toEqual({ transport: 'docker', ref: 'quay.io/kairos/ext:v1' });
    expect(await nodeImageLocation('container', 'quay.io/kairos/ext:v1', 'install')).toEqual({ transport: 'docker', ref: 'quay.io/kairos/ext:v1' });
    expect(await nodeImageLocation('docker-archive', 'f.tar:a:b', 'install')).toEqual({ transport: 'docker-archive', path: 'f.tar', ref: 'a:b' });
    expect(await nodeImageLocation('oci-archive', 'f.tar', 'install')).toEqual({ transport: 'oci-archive', path: 'f.tar', ref: '' });
  });
});
