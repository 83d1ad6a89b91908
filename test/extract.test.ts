import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { KbError } from '../src/errors.js';
import { extractImage } from '../src/extract/extract-image.js';
import { FileWriter } from '../src/extract/file-writer.js';
import { InstallJournal } from '../src/extract/journal.js';
import { cleanupTempDirs, mustRun, REPO_ROOT, run, tempDir } from './helpers/exec.js';
import { craftImage, type CraftEntry } from './helpers/craft-image.js';
import { snapshotTree } from './helpers/tree.js';

afterAll(cleanupTempDirs);

const snapshot = (dir: string) => snapshotTree(dir, { content: true });

const dir = (name: string): CraftEntry => ({ name, type: 'directory' });
const file = (name: string, content: string, mode = 0o644): CraftEntry => ({ name, type: 'file', content, mode });

describe('overlay extraction with whiteouts onto a pre-populated root', () => {
  it('flattens layers in order, honours whiteouts and opaque dirs between layers, and never deletes what the root already had', async () => {
    const root = join(tempDir(), 'root');
    mkdirSync(join(root, 'etc'), { recursive: true });
    writeFileSync(join(root, 'etc/keep.conf'), 'host');
    mkdirSync(join(root, 'opt/app'), { recursive: true });
    writeFileSync(join(root, 'opt/app/host-file'), 'host');
    mkdirSync(join(root, 'usr/bin'), { recursive: true });
    writeFileSync(join(root, 'usr/bin/replaced'), 'host');
    mkdirSync(join(root, 'usr/lib'), { recursive: true });
    writeFileSync(join(root, 'usr/lib/x'), 'host-x');

    const { layout, manifest } = await craftImage(join(tempDir(), 'img'), [
      [
        dir('opt/'),
        dir('opt/app/'),
        file('opt/app/a', 'A0'),
        file('opt/app/b', 'B0'),
        dir('opt/app/sub/'),
        file('opt/app/sub/c', 'C0'),
        dir('usr/'),
        dir('usr/lib/'),
        file('usr/lib/x', 'X0'),
        dir('usr/bin/'),
        file('usr/bin/replaced', 'L0'),
        dir('data/'),
        dir('data/dir/'),
        file('data/dir/f', 'F0'),
        file('gone', 'G0'),
      ],
      [
        dir('opt/app/'),
        { name: 'opt/app/.wh..wh..opq', type: 'file', content: '' },
        file('opt/app/new', 'N1'),
        { name: 'usr/lib/.wh.x', type: 'file', content: '' },
        file('data/dir', 'now a file'),
        file('usr/bin/replaced', 'L1', 0o755),
        { name: '.wh.gone', type: 'file', content: '' },
      ],
      [
        dir('etc/'),
        file('etc/motd', 'hello'),
        { name: 'etc/motd2', type: 'link', linkname: 'etc/motd' },
        { name: 'usr/bin/sh', type: 'symlink', linkname: '/bin/busybox' },
        file('usr/bin/suid', 'S', 0o4755),
      ],
    ]);
    const r = await extractImage(layout, manifest, root);
    expect(snapshot(root)).toEqual({
      data: 'd',
      'data/dir': 'f644:now a file',
      etc: 'd',
      'etc/keep.conf': 'f644:host',
      'etc/motd': 'f644:hello',
      'etc/motd2': 'f644:hello',
      opt: 'd',
      'opt/app': 'd',
      'opt/app/host-file': 'f644:host', // opaque hides lower *layers*, not the destination
      'opt/app/new': 'f644:N1',
      usr: 'd',
      'usr/bin': 'd',
      'usr/bin/replaced': 'f755:L1',
      'usr/bin/sh': 'l -> /bin/busybox',
      'usr/bin/suid': 'f755:S', // setuid stripped by default
      'usr/lib': 'd',
      'usr/lib/x': 'f644:host-x', // whiteout of a lower layer's file keeps the host's file
    });
    expect(lstatSync(join(root, 'etc/motd')).ino).toBe(lstatSync(join(root, 'etc/motd2')).ino);
    expect(statSync(join(root, 'etc/motd')).mtime.getTime()).toBe(1_000_000_000_000);
    expect(r.files).toBe(5);
  });

  it('applies extended attributes from PAX records, unless told not to', async () => {
    const { layout, manifest } = await craftImage(join(tempDir(), 'img'), [[{ name: 'etc/x', type: 'file', content: 'x', pax: { 'SCHILY.xattr.user.kbundle': 'hello' } } as CraftEntry]]);
    const root = join(tempDir(), 'root');
    const r = await extractImage(layout, manifest, root);
    expect(r.warnings).toEqual([]);
    expect(mustRun('getfattr', ['--only-values', '-n', 'user.kbundle', join(root, 'etc/x')])).toBe('hello');
    const root2 = join(tempDir(), 'root2');
    await extractImage(layout, manifest, root2, { xattrs: false });
    expect(run('getfattr', ['-n', 'user.kbundle', join(root2, 'etc/x')]).code).not.toBe(0);
  });

  it('keeps setuid bits only when allowed', async () => {
    const { layout, manifest } = await craftImage(join(tempDir(), 'img'), [[file('bin/s', 'x', 0o4755)]]);
    const root = join(tempDir(), 'root');
    await extractImage(layout, manifest, root, { allowSetuid: true });
    expect(statSync(join(root, 'bin/s')).mode & 0o7777).toBe(0o4755);
  });
});

describe('hostile archives', () => {
  // The root sits in its own folder next to a sentinel folder; nothing may ever appear outside the root.
  async function attempt(layers: CraftEntry[][], opts: Parameters<typeof extractImage>[3] = {}) {
    const base = tempDir('kbundle-hostile-');
    const root = join(base, 'root');
    mkdirSync(join(base, 'outside'));
    const { layout, manifest } = await craftImage(join(tempDir(), 'img'), layers);
    const before = readdirSync(base).sort();
    const err = await extractImage(layout, manifest, root, opts).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(readdirSync(base).sort()).toEqual(before.includes('root') ? before : [...before, 'root'].sort());
    expect(readdirSync(join(base, 'outside'))).toEqual([]);
    return { root, err };
  }

  const refused: [string, CraftEntry[][], RegExp][] = [
    ['a name climbing out with ..', [[file('../evil', 'x')]], /climbs out of the root/],
    ['a deep .. after a real dir', [[dir('a/'), file('a/../../outside/evil', 'x')]], /climbs out of the root/],
    ['a hard link to a host file', [[{ name: 'passwd', type: 'link', linkname: 'etc/passwd' }]], /not a file of this image/],
    ['a hard link climbing out', [[{ name: 'l', type: 'link', linkname: '../outside/x' }]], /climbs out of the root/],
    ['a whiteout naming ..', [[file('a/.wh...', '')]], /whiteout .* names no file inside the root/],
    ['a device node', [[{ name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0 }]], /is a block-device; refusing/],
    ['a fifo', [[{ name: 'p', type: 'fifo' }]], /is a fifo; refusing/],
  ];
  for (const [name, layers, msg] of refused) {
    it(`refuses ${name} with a clear error`, async () => {
      const { err } = await attempt(layers);
      // Hostile paths are bad input; a device node is refused by policy (--allow-devices).
      expect(err).toBeInstanceOf(KbError);
      expect((err as KbError).code).toBe(/device|fifo/.test(name) ? 'REFUSED' : 'INVALID_INPUT');
      expect((err as Error).message).toMatch(msg);
    });
  }

  // Symlinks inside one image: mutate.Extract semantics drop entries below a non-directory of the
  // same or a higher layer, so these never get written through the link at all.
  const dropped: [string, CraftEntry[][], string][] = [
    ['a file through an absolute symlink to / in the same layer', [[{ name: 'to-root', type: 'symlink', linkname: '/' }, file('to-root/outside/evil', 'x')]], 'to-root'],
    ['a file through a relative symlink climbing up', [[{ name: 'up', type: 'symlink', linkname: '../../../..' }, file('up/outside/evil', 'x')]], 'up'],
    ['a symlink chain', [[{ name: 'a', type: 'symlink', linkname: 'b' }, { name: 'b', type: 'symlink', linkname: '../../outside' }, file('a/evil', 'x')]], 'a'],
    ['a symlink from a lower layer', [[{ name: 'x', type: 'symlink', linkname: '/../outside' }], [file('x/evil', 'x')]], 'x'],
  ];
  for (const [name, layers, link] of dropped) {
    it(`does not follow ${name}`, async () => {
      const { root, err } = await attempt(layers);
      expect(err).toBeUndefined();
      expect(lstatSync(join(root, link)).isSymbolicLink()).toBe(true);
    });
  }

  // Symlinks already on the destination are followed as if the root were "/".
  const contained: [string, CraftEntry[][], string, string][] = [
    ['an absolute entry name', [[file('/outside/evil', 'x')]], '', 'outside/evil'],
    ['a destination symlink to /', [[file('to-root/outside/evil', 'x')]], '/', 'outside/evil'],
    ['a destination symlink climbing up', [[file('up/outside/evil', 'x')]], '../../../..', 'outside/evil'],
    ['a destination symlink to the host folder', [[file('host/evil', 'x')]], 'HOST', 'HOST-INSIDE/evil'],
    // node-tar CVE-2021-32803 shape: directory entry, then a symlink of the same name, then a file below it
    ['a directory swapped for a symlink (CVE-2021-32803 shape)', [[dir('d/'), { name: 'd', type: 'symlink', linkname: '../outside' }, file('d/evil', 'x')]], '', 'd/evil'],
  ];
  for (const [name, layers, preLink, inside] of contained) {
    it(`keeps ${name} inside the root`, async () => {
      const base = tempDir('kbundle-hostile-');
      const root = join(base, 'root');
      mkdirSync(join(base, 'outside'));
      mkdirSync(root);
      const linkName = layers[0]![0]!.name.split('/').filter(Boolean)[0]!;
      let expected = inside;
      if (preLink === 'HOST') {
        symlinkSync(join(base, 'outside'), join(root, linkName)); // absolute host path
        expected = join(base, 'outside').slice(1) + '/evil';
      } else if (preLink) symlinkSync(preLink, join(root, linkName));
      const { layout, manifest } = await craftImage(join(tempDir(), 'img'), layers);
      await extractImage(layout, manifest, root);
      expect(readdirSync(join(base, 'outside'))).toEqual([]);
      expect(readFileSync(join(root, expected), 'utf8')).toBe('x');
    });
  }

  it('stops tar bombs at the entry, size and depth limits', async () => {
    const many = Array.from({ length: 50 }, (_, i) => file(`f${i}`, 'x'));
    expect(((await attempt([many], { limits: { maxEntries: 20 } })).err as Error).message).toMatch(/more than 20 entries/);
    expect(((await attempt([[file('big', 'y'.repeat(5000))]], { limits: { maxTotalBytes: 4096 } })).err as Error).message).toMatch(/over the 4096-byte limit|more than 4096 bytes/);
    const deep = `${Array.from({ length: 40 }, () => 'd').join('/')}/f`;
    expect(((await attempt([[file(deep, 'x')]], { limits: { maxDepth: 32 } })).err as Error).message).toMatch(/nested deeper than 32 levels/);
  });

  it('keeps a destination symlink to a directory (merged /usr) and writes through it', async () => {
    const base = tempDir();
    const root = join(base, 'root');
    mkdirSync(join(root, 'usr/lib'), { recursive: true });
    symlinkSync('usr/lib', join(root, 'lib'));
    const { layout, manifest } = await craftImage(join(base, 'img'), [[dir('lib/'), file('lib/mod.so', 'm')]]);
    await extractImage(layout, manifest, root);
    expect(readlinkSync(join(root, 'lib'))).toBe('usr/lib');
    expect(readFileSync(join(root, 'usr/lib/mod.so'), 'utf8')).toBe('m');
  });

  it('never writes a layer whose bytes do not match its digest', async () => {
    const base = tempDir();
    const { layout, manifest } = await craftImage(join(base, 'img'), [[file('a', 'good')]]);
    const m = JSON.parse(readFileSync(layout.blobPath(manifest.digest), 'utf8'));
    const blob = layout.blobPath(m.layers[0].digest);
    const bytes = readFileSync(blob);
    bytes[bytes.length - 5]! ^= 0xff;
    writeFileSync(blob, bytes);
    const root = join(base, 'root');
    await expect(extractImage(layout, manifest, root)).rejects.toThrow(/does not match/);
    expect(existsSync(join(root, 'a'))).toBe(false);
  });
});

describe('journaled installs stage the folders a root lacks whole', () => {
  /** Install as `kbundle install` does: journal, extract, commit (or roll back on failure). */
  async function journaled(layers: CraftEntry[][], root: string, beforeCommit?: () => void): Promise<void> {
    const { layout, manifest } = await craftImage(join(tempDir(), 'img'), layers);
    const journal = InstallJournal.begin(root, 'test');
    try {
      const r = await extractImage(layout, manifest, root, { journal });
      beforeCommit?.();
      journal.commitSync();
      await r.finish();
    } catch (e) {
      journal.abortSync();
      throw e;
    }
  }
  const link = (name: string, linkname: string): CraftEntry => ({ name, type: 'symlink', linkname });
  const withoutState = (root: string) => Object.fromEntries(Object.entries(snapshot(root)).filter(([k]) => !k.startsWith('var')));

  it('writes a new folder under a temp name, with its files at their own names, and renames it at commit', async () => {
    const root = tempDir();
    mkdirSync(join(root, 'etc'));
    writeFileSync(join(root, 'etc/keep'), 'kept');
    const files = Array.from({ length: 300 }, (_, i) => file(`usr/share/app/f${i}`, `file ${i}`)); // past the writer thread's start
    const xattr = (name: string, type: 'file' | 'directory'): CraftEntry => ({ name, type, content: type === 'file' ? 'x' : undefined, pax: { 'SCHILY.xattr.user.kbundle': name } });
    let pending: string[] = [];
    const layer = [
      dir('usr/'),
      dir('usr/share/'),
      xattr('usr/share/tagged/', 'directory'),
      xattr('usr/share/tagged/f', 'file'),
      ...files,
      file('usr/share/app/deep/er/x', 'x', 0o600),
      file('etc/app.conf', 'conf'),
    ];
    await journaled([layer], root, () => {
      pending = readdirSync(root);
      // Before the commit: nothing at a final path, the new tree whole under one temp name.
      const temps = pending.filter((n) => n.startsWith('.kbundle-tmp-'));
      expect(temps).toHaveLength(1);
      expect(readFileSync(join(root, temps[0]!, 'share/app/f299'), 'utf8')).toBe('file 299');
      expect(existsSync(join(root, 'usr'))).toBe(false);
    });
    expect(pending).not.toContain('usr');
    const after = snapshot(root);
    expect(after['usr/share/app/f0']).toBe('f644:file 0');
    expect(after['usr/share/app/deep/er/x']).toBe('f600:x');
    expect(after['etc/app.conf']).toBe('f644:conf');
    expect(after['etc/keep']).toBe('f644:kept');
    expect(Object.keys(after).filter((k) => k.includes('.kbundle-'))).toEqual([]);
    for (const p of ['usr/share/tagged/', 'usr/share/tagged/f']) expect(mustRun('getfattr', ['--only-values', '-n', 'user.kbundle', join(root, p)])).toBe(p);
  });

  it("merges into a folder that appeared meanwhile at a staged folder's path (a live root), and replaces a file that did", async () => {
    const root = tempDir();
    await journaled([[dir('usr/'), dir('usr/share/'), file('usr/share/a', 'a'), dir('opt/'), file('opt/b', 'b')]], root, () => {
      mkdirSync(join(root, 'usr/local/bin'), { recursive: true }); // written by something else on the node
      writeFileSync(join(root, 'usr/local/bin/other'), 'other');
      mkdirSync(join(root, 'usr/share'));
      writeFileSync(join(root, 'usr/share/a'), 'theirs');
      writeFileSync(join(root, 'opt'), 'a file where the image puts a folder');
    });
    const after = withoutState(root);
    expect(after['usr/local/bin/other']).toBe('f644:other');
    expect(after['usr/share/a']).toBe('f644:a'); // the image's file replaces theirs, as containerd's Apply does
    expect(after['opt/b']).toBe('f644:b');
    expect(Object.keys(after).filter((k) => k.includes('.kbundle-'))).toEqual([]);
  });

  it('rolls a new folder back whole when the install fails', async () => {
    const root = tempDir();
    mkdirSync(join(root, 'etc'));
    const before = withoutState(root);
    await expect(journaled([[dir('opt/'), file('opt/app/a', 'a'), { name: 'opt/app/dev', type: 'fifo' }]], root)).rejects.toMatchObject({ code: 'REFUSED' });
    expect(withoutState(root)).toEqual(before);
  });

  it('follows a symlink the root has into a new folder, as an unjournaled install does', async () => {
    const root = tempDir();
    mkdirSync(join(root, 'opt'), { recursive: true });
    symlinkSync('/usr/share/app', join(root, 'opt/app')); // dangling until the image makes the folder
    await journaled([[dir('usr/'), dir('usr/share/'), dir('usr/share/app/'), file('opt/app/conf', 'c')]], root);
    expect(readFileSync(join(root, 'usr/share/app/conf'), 'utf8')).toBe('c');
    expect(readlinkSync(join(root, 'opt/app'))).toBe('/usr/share/app');
  });

  it('keeps a destination symlink to a folder the image itself creates (merged /usr on a root without usr/lib yet), as an unjournaled install does', async () => {
    const layers = [
      [dir('lib/'), file('lib/b', 'b')],
      [dir('usr/'), dir('usr/lib/'), file('usr/lib/a', 'a')],
    ]; // bottom first: usr/lib comes from the top layer
    const results = [];
    for (const journal of [false, true]) {
      const root = tempDir();
      symlinkSync('usr/lib', join(root, 'lib'));
      if (journal) await journaled(layers, root);
      else {
        const { layout, manifest } = await craftImage(join(tempDir(), 'img'), layers);
        await extractImage(layout, manifest, root);
      }
      expect(readlinkSync(join(root, 'lib'))).toBe('usr/lib');
      results.push(withoutState(root));
    }
    expect(results[1]).toEqual(results[0]);
    expect(results[0]!['usr/lib/b']).toBe('f644:b');
  });

  // A symlink the root has leads into a folder the image creates, and on through a symlink the
  // image put there to a host path: resolving in the root cannot see the staged folder, so the
  // walk into it must refuse the image's symlink (followed, it would write outside the root).
  const through: [string, CraftEntry[]][] = [
    ['a file', [file('opt/x/l/pwned', 'x')]],
    ['a folder', [dir('opt/x/l/sub/')]],
    ['a file deeper down', [file('opt/x/l/a/b/pwned', 'x')]],
    ['a hard link', [file('usr/share/foo/f', 'f'), { name: 'opt/x/l/hl', type: 'link', linkname: 'usr/share/foo/f' }]],
  ];
  for (const [name, entries] of through) {
    it(`refuses ${name} reached through the image's own symlink in a new folder, writing nothing outside the root`, async () => {
      const base = tempDir('kbundle-hostile-');
      const root = join(base, 'root');
      const outside = join(base, 'outside');
      mkdirSync(outside);
      mkdirSync(join(root, 'opt'), { recursive: true });
      symlinkSync('/usr/share/foo', join(root, 'opt/x'));
      const before = withoutState(root);
      const layers = [[dir('usr/'), dir('usr/share/'), dir('usr/share/foo/'), link('usr/share/foo/l', outside), ...entries]];
      await expect(journaled(layers, root)).rejects.toMatchObject({ code: 'UNSUPPORTED', message: expect.stringMatching(/lies below "usr\/share\/foo\/l", a symbolic link the same image creates/) });
      expect(readdirSync(outside)).toEqual([]);
      expect(withoutState(root)).toEqual(before);
    });
  }

  it("refuses a folder entry landing on the image's own symlink by another way (its mode would be set on the link target)", async () => {
    const base = tempDir('kbundle-hostile-');
    const root = join(base, 'root');
    const outside = join(base, 'outside');
    mkdirSync(outside, { mode: 0o700 });
    mkdirSync(join(root, 'opt'), { recursive: true });
    symlinkSync('/usr/share/foo', join(root, 'opt/x'));
    const layers = [[dir('usr/'), dir('usr/share/'), dir('usr/share/foo/'), link('usr/share/foo/l', outside), { name: 'opt/x/l/', type: 'directory', mode: 0o777 } as CraftEntry]];
    await expect(journaled(layers, root)).rejects.toMatchObject({
      code: 'UNSUPPORTED',
      message: expect.stringMatching(/"opt\/x\/l" is a folder, but the image already put a symbolic link at usr\/share\/foo\/l/),
    });
    expect(statSync(outside).mode & 0o777).toBe(0o700);
  });
});

describe('interrupted extraction', () => {
  it('leaves no partially written file at a final path after SIGKILL', async () => {
    const base = tempDir();
    const big = 'z'.repeat(8 * 1024 * 1024);
    const files = Array.from({ length: 20 }, (_, i) => file(`data/f${i}`, big));
    const { layout, manifest } = await craftImage(join(base, 'img'), [files]);
    const root = join(base, 'root');
    const script = `
      const { OciLayout } = await import(${JSON.stringify(join(REPO_ROOT, 'dist/src/store/oci-layout.js'))});
      const { extractImage } = await import(${JSON.stringify(join(REPO_ROOT, 'dist/src/extract/extract-image.js'))});
      const layout = await OciLayout.open(${JSON.stringify(layout.dir)});
      await extractImage(layout, ${JSON.stringify(manifest)}, ${JSON.stringify(root)}, { onFile: () => process.stdout.write('.') });`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((res) => child.stdout.once('data', () => res()));
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
    const present = readdirSync(join(root, 'data')).filter((n) => !n.startsWith('.kbundle-tmp-'));
    expect(present.length).toBeGreaterThan(0);
    expect(present.length).toBeLessThan(20);
    for (const n of present) expect(statSync(join(root, 'data', n)).size).toBe(big.length);
  });
});

describe('the file-writing thread of journaled installs', () => {
  it('writes queued files with content and mode; a thread that stops fails the next call with INTERNAL', async () => {
    const dir = tempDir();
    const writer = new FileWriter();
    await writer.write(join(dir, 'a'), Buffer.from('alpha'), 0o640, new Date(0));
    await writer.drain();
    expect(readFileSync(join(dir, 'a'), 'utf8')).toBe('alpha');
    expect(statSync(join(dir, 'a')).mode & 0o777).toBe(0o640);
    // What a crashed thread looks like to the install: its worker is gone.
    await (writer as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    await expect(writer.write(join(dir, 'b'), Buffer.from('beta'), 0o644, new Date(0)).then(() => writer.drain())).rejects.toMatchObject({ name: 'KbError', code: 'INTERNAL' });
    expect(existsSync(join(dir, 'b'))).toBe(false);
    writer.stopSync();
  });

  it('copies what it is given before returning (the caller reuses that memory at once)', async () => {
    const dir = tempDir();
    const writer = new FileWriter();
    const reused = Buffer.alloc(300_000);
    for (let i = 0; i < 3; i++) {
      reused.fill(65 + i);
      await writer.write(join(dir, `small-${i}`), reused.subarray(0, 1000 * (i + 1)), 0o644, new Date(0));
      await writer.writePieces(join(dir, `large-${i}`), [reused, reused.subarray(0, 10)], 0o644, new Date(0));
    }
    reused.fill(0);
    await writer.drain();
    for (let i = 0; i < 3; i++) {
      expect(readFileSync(join(dir, `small-${i}`), 'latin1')).toBe(String.fromCharCode(65 + i).repeat(1000 * (i + 1)));
      expect(readFileSync(join(dir, `large-${i}`), 'latin1')).toBe(String.fromCharCode(65 + i).repeat(300_010));
    }
    writer.stopSync();
  });

  it('writes a large file queued in pieces across batches, between small files', async () => {
    const dir = tempDir();
    const writer = new FileWriter();
    const pieces = Array.from({ length: 40 }, (_, i) => randomBytes(100_000 + i));
    await writer.write(join(dir, 'before'), Buffer.from('b'), 0o600, new Date(0));
    await writer.writePieces(join(dir, 'large'), pieces, 0o751, new Date(5_000_000));
    await writer.write(join(dir, 'after'), Buffer.from('a'), 0o644, new Date(0));
    await writer.writePieces(join(dir, 'empty'), [], 0o644, new Date(0));
    // Modes the usual umask would cut (given at creation when it would not): chmod'ed afterwards.
    await writer.write(join(dir, 'group-writable'), Buffer.from('g'), 0o666, new Date(0));
    await writer.write(join(dir, 'sticky'), Buffer.from('s'), 0o1755, new Date(0));
    await writer.drain();
    expect(statSync(join(dir, 'group-writable')).mode & 0o7777).toBe(0o666);
    expect(statSync(join(dir, 'sticky')).mode & 0o7777).toBe(0o1755);
    expect(statSync(join(dir, 'after')).mode & 0o7777).toBe(0o644);
    expect(readFileSync(join(dir, 'large')).equals(Buffer.concat(pieces))).toBe(true);
    expect(statSync(join(dir, 'large')).mode & 0o777).toBe(0o751);
    expect(statSync(join(dir, 'large')).mtimeMs).toBe(5_000_000);
    expect(readFileSync(join(dir, 'before'), 'utf8') + readFileSync(join(dir, 'after'), 'utf8') + readFileSync(join(dir, 'empty'), 'utf8')).toBe('ba');
    // A piece that cannot be written (its folder is gone) fails the install with the errno error.
    await expect(writer.writePieces(join(dir, 'missing', 'f'), pieces.slice(0, 3), 0o644, new Date(0)).then(() => writer.drain())).rejects.toMatchObject({ code: 'ENOENT' });
    writer.stopSync();
  });
});
