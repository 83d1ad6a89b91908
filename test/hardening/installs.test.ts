/**
 * Hardening, installs (issue 16, classes 3 and 4): a container:// install is all-or-nothing
 * whatever stops it — SIGKILL after any journal record, SIGTERM, a full disk, a read-only root —
 * leaves no temp files, serialises with a concurrent install, and keeps its state writes in the
 * root even with symlinks planted there.
 */
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTo } from '../../src/builder/output.js';
import { EXIT_CODES } from '../../src/cli/exit-codes.js';
import { InstallJournal, recoverJournals, TMP_PREFIX } from '../../src/extract/journal.js';
import { cliCommand, kbundle, kbundleAsync } from '../helpers/cli.js';
import { cleanupTempDirs, tempDir } from '../helpers/exec.js';
import { writeBundle } from '../helpers/fixture-bundle.js';

const isRoot = process.getuid?.() === 0;
afterAll(() => cleanupTempDirs());

/** Every path under `root` (but kbundle's state folder) with its type and content. */
function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      const rel = relative(root, p);
      if (rel === 'var/lib/kbundle' || rel.startsWith('var/lib/kbundle/')) continue;
      const st = lstatSync(p);
      if (st.isSymbolicLink()) out[rel] = `link:${readlinkSync(p)}`;
      else if (st.isDirectory()) {
        out[rel] = `dir:${(st.mode & 0o7777).toString(8)}`;
        walk(p);
      } else out[rel] = `file:${(st.mode & 0o7777).toString(8)}:${readFileSync(p, 'utf8')}`;
    }
  };
  walk(root);
  return out;
}

const litter = (snap: Record<string, string>) => Object.keys(snap).filter((p) => /\.kbundle-(tmp|old)-/.test(p));

/** The root before the install: things the image replaces, of every kind. */
function oldRoot(): string {
  const root = tempDir();
  mkdirSync(join(root, 'var/lib'), { recursive: true }); // a node has it; kbundle's state goes below
  mkdirSync(join(root, 'etc/app'), { recursive: true });
  writeFileSync(join(root, 'etc/app/config'), 'old config');
  writeFileSync(join(root, 'etc/keep'), 'untouched');
  writeFileSync(join(root, 'etc/was-a-file'), 'becomes a folder');
  mkdirSync(join(root, 'etc/was-a-folder/inner'), { recursive: true });
  writeFileSync(join(root, 'etc/was-a-folder/inner/x'), 'becomes a file');
  return root;
}

let layout: string;
const target = () => `container://${layout}:new`;

beforeAll(async () => {
  const files = [
    { path: 'config', content: 'new config' },
    { path: 'tool', content: '#!/bin/sh\necho tool\n', mode: 0o755 },
    { path: 'nested', content: 'nested file' },
    { path: 'plain', content: 'now a file' },
    { path: 'big', content: 'x'.repeat(300_000) },
  ];
  const spec =
    'name: app\nversion: 1.0.0\ndescription: app\ntype: container\nplatforms: [linux/amd64, linux/arm64]\nfiles:\n' +
    '  - src: config\n    dst: etc/app/config\n' +
    '  - src: tool\n    dst: usr/local/bin/tool\n' +
    '  - src: nested\n    dst: etc/was-a-file/nested\n' +
    '  - src: plain\n    dst: etc/was-a-folder\n' +
    '  - src: big\n    dst: opt/app/data/big\n';
  const dir = writeBundle(join(tempDir(), 'b'), spec, files);
  layout = join(tempDir(), 'oci');
  await buildTo(dir, { transport: 'oci', path: layout, ref: 'new' }, { platforms: ['linux/amd64'] });
});

/**
 * Install `image` onto fresh old roots, stopped by `signal(n)` right after journal record n for
 * each n of `records`, until an install has fewer records than n. Each time the root must end up
 * (after the journal pass a SIGKILL leaves to the next run) as the old tree or the new one, with
 * no temp files and no journal. Counts which it was.
 */
function interruptAtRecords(image: string, records: Iterable<number>, signal: (n: number) => 'SIGKILL' | 'SIGTERM') {
  const before = snapshot(oldRoot());
  const done = oldRoot();
  expect(kbundle(['install', image, '--local-file', '--root', done]).code).toBe(0);
  const after = snapshot(done);
  expect(after).not.toEqual(before);
  const seen = { before: 0, after: 0, terminated: 0 };
  for (const n of records) {
    const sig = signal(n);
    const root = oldRoot();
    const r = kbundle(['install', image, '--local-file', '--root', root], { env: { ...process.env, KBUNDLE_TEST_SIGNAL_AT: `${n}:${sig}` } });
    if (r.code === 0) break; // the install has fewer records than n: every step was covered
    if (sig === 'SIGKILL') {
      expect(r.code, r.stderr).toBe(-1); // killed (spawnSync reports no status)
      recoverJournals(root);
    } else if (r.code === 143) seen.terminated++;
    const now = snapshot(root);
    expect(litter(now)).toEqual([]);
    if (JSON.stringify(now) === JSON.stringify(before)) seen.before++;
    else {
      expect(now).toEqual(after);
      seen.after++;
    }
    expect(readdirSync(join(root, 'var/lib/kbundle/journal'))).toEqual([]);
  }
  return { seen, after };
}

/** Install `image` onto a copy of the old root on a tmpfs of `size`: a clean IO error naming the path, the root as it was. */
function expectCleanEnospc(image: string, size: string): void {
  const root = oldRoot();
  const small = tempDir();
  expect(spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'kbundle-full', small]).status).toBe(0);
  try {
    cpSync(root, small, { recursive: true });
    const before = snapshot(small);
    const r = kbundle(['install', image, '--local-file', '--root', small]);
    expect(r.code, r.stderr).toBe(EXIT_CODES.IO);
    expect(r.stderr).toMatch(new RegExp(`kbundle: error: ${small}/\\S+: no space left on the device \\(ENOSPC\\)`));
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(snapshot(small)).toEqual(before);
  } finally {
    spawnSync('umount', [small]);
  }
}

describe('container:// installs are all-or-nothing', () => {
  it('a SIGKILL after any journal record leaves, once recovered, the old tree or the new one and no temp files', () => {
    const { seen, after } = interruptAtRecords(
      target(),
      Array.from({ length: 199 }, (_, i) => i + 1),
      () => 'SIGKILL',
    );
    expect(after['etc/was-a-folder']).toBe('file:644:now a file');
    // Kills before the commit record roll back, kills after it roll forward: both happened.
    expect(seen.before).toBeGreaterThan(3);
    expect(seen.after).toBeGreaterThan(0);
  });

  it('the next install undoes a killed one before it starts, leaving no temp files of it', () => {
    const root = oldRoot();
    const done = oldRoot();
    expect(kbundle(['install', target(), '--local-file', '--root', done]).code).toBe(0);
    expect(kbundle(['install', target(), '--local-file', '--root', root], { env: { ...process.env, KBUNDLE_TEST_SIGNAL_AT: '8' } }).code).toBe(-1);
    expect(readdirSync(join(root, 'var/lib/kbundle/journal'))).toHaveLength(1);
    expect(litter(snapshot(root)).length).toBeGreaterThan(0);
    expect(kbundle(['install', target(), '--local-file', '--root', root]).code).toBe(0);
    expect(snapshot(root)).toEqual(snapshot(done));
    expect(readdirSync(join(root, 'var/lib/kbundle/journal'))).toEqual([]);
  });

  it('SIGTERM part way undoes the install, removes its temp files and exits 143', () => {
    const root = oldRoot();
    const before = snapshot(root);
    const r = kbundle(['install', target(), '--local-file', '--root', root], { env: { ...process.env, KBUNDLE_TEST_SIGNAL_AT: '6:SIGTERM' } });
    expect(r.code, r.stderr).toBe(143);
    expect(snapshot(root)).toEqual(before);
    expect(readdirSync(join(root, 'var/lib/kbundle/journal'))).toEqual([]);
    expect(existsSync(join(root, 'var/lib/kbundle/lock'))).toBe(false);
  });
  it('a crash before buffered stage records reach the disk still rolls back every temp (found by the folder record and its prefix)', () => {
    const root = oldRoot();
    const before = snapshot(root);
    const journal = InstallJournal.begin(root, 'test');
    const dir = join(root, 'etc/app');
    const temps = [0, 1, 2].map((i) => join(dir, `${TMP_PREFIX}test-${i}`));
    for (const t of temps) {
      journal.stage(t, join(dir, 'config'));
      writeFileSync(t, 'staged');
    }
    const written = readFileSync(journal.file, 'utf8');
    expect(written).toContain('"t":"tmpdir"');
    expect(written).not.toContain('"t":"stage"'); // still buffered: what a SIGKILL here leaves on disk
    expect(recoverJournals(root)).toEqual({ rolledBack: 1, rolledForward: 0 });
    expect(snapshot(root)).toEqual(before);
    expect(readdirSync(join(root, 'var/lib/kbundle/journal'))).toEqual([]);
  });
});

describe.runIf(isRoot)('a full or read-only file system is a clean IO error and changes nothing', () => {
  it('ENOSPC: exit IO naming the path, the root as it was, no temp files', () => {
    expectCleanEnospc(target(), '256k');
  });

  it('EROFS: a read-only root is refused with exit IO before anything is written', () => {
    const root = oldRoot();
    const ro = tempDir();
    expect(spawnSync('mount', ['--bind', '-o', 'ro', root, ro]).status).toBe(0);
    try {
      const before = snapshot(ro);
      const r = kbundle(['install', target(), '--local-file', '--root', ro]);
      expect(r.code, r.stderr).toBe(EXIT_CODES.IO);
      expect(r.stderr).toMatch(/the file system is read-only \(EROFS\)/);
      expect(snapshot(ro)).toEqual(before);
    } finally {
      spawnSync('umount', [ro]);
    }
  });
});

describe('images with many small files (created on the writer thread after the first 256)', () => {
  let many: string;
  const manyFiles = Array.from({ length: 600 }, (_, i) => ({ path: `many/f-${String(i).padStart(3, '0')}`, content: `${i}:${'y'.repeat(2000)}`, mode: i % 2 ? 0o755 : 0o644 }));
  beforeAll(async () => {
    // Into a folder the root has (etc/app), so each file is a temp of its own with a journal record.
    const spec = 'name: many\nversion: 1.0.0\ndescription: many\ntype: container\nplatforms: [linux/amd64, linux/arm64]\nfiles:\n  - src: many\n    dst: etc/app\n';
    const dir = writeBundle(join(tempDir(), 'many'), spec, manyFiles);
    many = join(tempDir(), 'oci');
    await buildTo(dir, { transport: 'oci', path: many, ref: 'many' }, { platforms: ['linux/amd64'] });
  });

  it('every file lands with its content and mode, and no temp file is left', () => {
    const root = oldRoot();
    const r = kbundle(['install', `container://${many}:many`, '--local-file', '--root', root]);
    expect(r.code, r.stderr).toBe(0);
    const snap = snapshot(root);
    expect(litter(snap)).toEqual([]);
    for (const f of manyFiles) expect(snap[f.path.replace('many/', 'etc/app/')]).toBe(`file:${f.mode.toString(8)}:${f.content}`);
    expect(readdirSync(join(root, 'var/lib/kbundle/journal'))).toEqual([]);
  });

  it('a SIGKILL or SIGTERM after any journal record, with the writer thread busy, leaves the old tree or the new one and no temp files', () => {
    // Every journal record counts, also stage records still buffered in memory (~600 here): the
    // first records one by one, then a stride, which lands before and after the commit record.
    const records = function* () {
      for (let n = 1; n < 2000; n += n < 12 ? 1 : 41) yield n;
    };
    // Odd records: SIGKILL (recovered by the next run's journal pass); even ones: SIGTERM (undone at once).
    const { seen } = interruptAtRecords(`container://${many}:many`, records(), (n) => (n % 2 ? 'SIGKILL' : 'SIGTERM'));
    expect(seen.before).toBeGreaterThan(2);
    expect(seen.after).toBeGreaterThan(0);
    expect(seen.terminated).toBeGreaterThan(0);
  });

  it.runIf(isRoot)('ENOSPC on the writer thread: exit IO naming the path, the root as it was, no temp files', () => {
    expectCleanEnospc(`container://${many}:many`, '1600k');
  });

  it.runIf(isRoot)('a journal record that finds the disk full names the journal, not the root', () => {
    const small = tempDir();
    expect(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'kbundle-full', small]).status).toBe(0);
    try {
      const journal = InstallJournal.begin(small, 'test');
      try {
        try {
          writeFileSync(join(small, 'filler'), Buffer.alloc(1024 * 1024));
        } catch (e) {
          expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
        }
        // A record longer than a page needs a page the full tmpfs does not have.
        expect(() => journal.moved(join(small, 'a'.repeat(9000)), join(small, 'b'))).toThrow(`${journal.file}: no space left on the device (ENOSPC)`);
      } finally {
        journal.abortSync();
      }
      expect(existsSync(journal.file)).toBe(false);
    } finally {
      spawnSync('umount', [small]);
    }
  });
});

describe('a folder the root lacks (staged whole under a temp name, renamed at commit)', () => {
  let fresh: string;
  const files = Array.from({ length: 4000 }, (_, i) => ({ path: `fresh/f-${String(i).padStart(4, '0')}`, content: `${i}:${'q'.repeat(1000)}` }));
  beforeAll(async () => {
    const spec = 'name: fresh\nversion: 1.0.0\ndescription: fresh\ntype: container\nplatforms: [linux/amd64, linux/arm64]\nfiles:\n  - src: fresh\n    dst: opt/fresh\n';
    fresh = join(tempDir(), 'oci');
    await buildTo(writeBundle(join(tempDir(), 'fresh'), spec, files), { transport: 'oci', path: fresh, ref: 'fresh' }, { platforms: ['linux/amd64'] });
  });

  /** Files written so far into the staged copy of opt/fresh (the root has no opt: its temp is in the root). */
  function stagedCount(root: string): number {
    const tmp = readdirSync(root).find((n) => n.startsWith('.kbundle-tmp-'));
    try {
      return tmp ? readdirSync(join(root, tmp, 'fresh')).length : 0;
    } catch {
      return 0;
    }
  }

  for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
    it(`a ${signal} while its files are being written leaves the old tree, no temp folder and no journal`, async () => {
      const root = oldRoot();
      const before = snapshot(root);
      const { file, args } = cliCommand();
      const child = spawn(file, [...args, 'install', `container://${fresh}:fresh`, '--local-file', '--root', root], { stdio: 'ignore' });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.on('exit', (code, sig) => res({ code, signal: sig })));
      let running = true;
      void exited.then(() => (running = false));
      const deadline = Date.now() + 60_000;
      while (running && stagedCount(root) < 300 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
      expect(running, 'the install ended before 300 of its 4000 files were staged').toBe(true);
      child.kill(signal);
      const end = await exited;
      if (signal === 'SIGKILL') {
        expect(end.signal).toBe('SIGKILL');
        expect(readdirSync(root).filter((n) => n.startsWith('.kbundle-tmp-'))).toHaveLength(1); // until the next run's journal pass
        recoverJournals(root);
      } else expect(end.code).toBe(143);
      expect(snapshot(root)).toEqual(before);
      expect(readdirSync(join(root, 'var/lib/kbundle/journal'))).toEqual([]);
    });
  }

  it('installed whole: every file at its place, no temp folder left', () => {
    const root = oldRoot();
    expect(kbundle(['install', `container://${fresh}:fresh`, '--local-file', '--root', root]).code).toBe(0);
    const snap = snapshot(root);
    expect(litter(snap)).toEqual([]);
    for (const f of files) expect(snap[`opt/${f.path}`]).toBe(`file:644:${f.content}`);
  });
});

describe('large files (written in pieces on the writer thread)', () => {
  let large: string;
  // 3 MB, over the 1 MiB inline limit: queued piece by piece as it is inflated; a small file
  // before and after it in the same folder.
  const body = Array.from({ length: 30_000 }, (_, i) => `line ${i} ${'z'.repeat(90)}\n`).join('');
  beforeAll(async () => {
    const spec = 'name: large\nversion: 1.0.0\ndescription: large\ntype: container\nplatforms: [linux/amd64, linux/arm64]\nfiles:\n  - src: large\n    dst: opt/large\n';
    const dir = writeBundle(join(tempDir(), 'large'), spec, [
      { path: 'large/a-small', content: 'before', mode: 0o644 },
      { path: 'large/b-large', content: body, mode: 0o755 },
      { path: 'large/c-small', content: 'after', mode: 0o644 },
    ]);
    large = join(tempDir(), 'oci');
    await buildTo(dir, { transport: 'oci', path: large, ref: 'large' }, { platforms: ['linux/amd64'] });
  });

  it('lands whole, and a SIGKILL or SIGTERM after any journal record leaves the old tree or the new one and no temp files', () => {
    const root = oldRoot();
    expect(kbundle(['install', `container://${large}:large`, '--local-file', '--root', root]).code).toBe(0);
    const snap = snapshot(root);
    expect(snap['opt/large/b-large']).toBe(`file:755:${body}`);
    expect(snap['opt/large/c-small']).toBe('file:644:after');
    const { seen } = interruptAtRecords(
      `container://${large}:large`,
      Array.from({ length: 40 }, (_, i) => i + 1),
      (n) => (n % 2 ? 'SIGKILL' : 'SIGTERM'),
    );
    expect(seen.before).toBeGreaterThan(0);
    expect(seen.after).toBeGreaterThan(0);
  });

  it.runIf(isRoot)('ENOSPC part way through its pieces: exit IO naming the path, the root as it was, no temp files', () => {
    expectCleanEnospc(`container://${large}:large`, '2m');
  });
});

describe('state writes stay in the root; concurrent installs are serialised', () => {
  it('a symlink planted at var/lib/kbundle is refused, and nothing is written where it points', () => {
    const root = oldRoot();
    const elsewhere = tempDir();
    symlinkSync(elsewhere, join(root, 'var/lib/kbundle'));
    const r = kbundle(['install', target(), '--local-file', '--root', root]);
    expect(r.code).toBe(EXIT_CODES.REFUSED);
    expect(r.stderr).toContain(`${root}/var/lib/kbundle is a symbolic link; kbundle keeps its state there and does not follow it`);
    expect(readdirSync(elsewhere)).toEqual([]);
    expect(readFileSync(join(root, 'etc/app/config'), 'utf8')).toBe('old config');
  });

  it('sysext install follows a symlink planted on its path inside the root, never out of it', () => {
    const root = tempDir();
    const host = tempDir();
    mkdirSync(join(root, 'var/lib'), { recursive: true });
    symlinkSync(host, join(root, 'var/lib/kairos')); // absolute: on the node it means <root>/<host path>
    const raw = join(tempDir(), 'demo.sysext.raw');
    writeFileSync(raw, 'not checked with --no-check');
    const r = kbundle(['sysext', 'install', `file:${raw}`, '--root', root, '--no-check']);
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(host)).toEqual([]);
    expect(readFileSync(join(root, host, 'extensions/demo.sysext.raw'), 'utf8')).toBe('not checked with --no-check');
  });

  it('a second install waits for the first (or fails BUSY with --lock-timeout 0)', async () => {
    const dir = writeBundle(join(tempDir(), 'slow'), 'name: slow\nversion: 1.0.0\ndescription: s\ntype: run\nplatforms: [linux/amd64, linux/arm64]\nrun: run.sh\n', [
      { path: 'run.sh', content: '#!/bin/sh\nsleep 3\necho slow done\n' },
    ]);
    const slow = join(tempDir(), 'oci');
    await buildTo(dir, { transport: 'oci', path: slow, ref: 's' });
    const root = oldRoot();
    const first = kbundleAsync(['install', `run://${slow}:s`, '--local-file', '--root', root]);
    // Wait until the first holds the lock.
    for (let i = 0; i < 100 && !existsSync(join(root, 'var/lib/kbundle/lock')); i++) await new Promise((r) => setTimeout(r, 50));
    const busy = kbundle(['install', target(), '--local-file', '--root', root, '--lock-timeout', '0']);
    expect(busy.code, busy.stderr).toBe(EXIT_CODES.BUSY);
    expect(busy.stderr).toMatch(/another kbundle is installing into this root \(pid \d+, install run:\/\//);
    const waiting = await kbundleAsync(['install', target(), '--local-file', '--root', root]);
    expect(waiting.code, waiting.stderr).toBe(0);
    expect(waiting.stderr).toMatch(/waiting for the install into .* that holds its lock/);
    expect((await first).code).toBe(0);
    expect(readFileSync(join(root, 'etc/app/config'), 'utf8')).toBe('new config');
    rmSync(root, { recursive: true, force: true });
  });
});
