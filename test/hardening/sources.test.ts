/**
 * Issue 16, class 2: bundle sources stay inside the bundle folder. A hostile bundle folder (a
 * pull request to a catalog, a tarball from somewhere) plants symlinks, `..`, absolute paths,
 * hard links and FIFOs; `build`, `validate`, `catalog build`, `sysext build` and Dockerfile builds
 * refuse every way out with the file and field named, never read a byte from outside the folder,
 * never hang on a FIFO, and write nothing. A symlink inside a copied folder is copied as a
 * symlink (its target is never read).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../src/cli/exit-codes.js';
import { kbundle, type CliResult } from '../helpers/cli.js';
import { cleanupTempDirs, mustRun, tempDir } from '../helpers/exec.js';

afterAll(cleanupTempDirs);

/** Long enough for a loaded 2-core CI machine; a FIFO that is opened for reading blocks forever. */
const NO_HANG = { timeoutMs: 60_000 };
const SECRET = 'SECRET-OUTSIDE-THE-BUNDLE\n';

function spec(body: string, type = 'container'): string {
  return `name: demo\nversion: 1.0.0\ndescription: hostile bundle\ntype: ${type}\nplatforms: [linux/amd64]\n${body}`;
}

/** `<top>/outside.txt` (a secret) next to `<top>/bundle/` holding bundle.yaml and what `plant` makes. */
function bundle(yaml: string, plant: (dir: string, top: string) => void = () => undefined): { top: string; dir: string } {
  const top = tempDir('kbundle-hostile-');
  writeFileSync(join(top, 'outside.txt'), SECRET);
  const dir = join(top, 'bundle');
  mkdirSync(dir);
  writeFileSync(join(dir, 'bundle.yaml'), yaml);
  plant(dir, top);
  return { top, dir };
}

function mkfifo(path: string): void {
  mustRun('mkfifo', [path]);
}

/** The refusal: exit code, the exact message line, no stack trace, no internal error. */
function expectRefused(r: CliResult, line: string, code = EXIT_CODES.INVALID_INPUT): void {
  expect(r.stderr).toContain(`kbundle: error: ${line}\n`);
  expect(r.code, r.stderr).toBe(code);
  expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
}

function build(top: string, ...extra: string[]): CliResult {
  return kbundle(['build', 'bundle', '-o', 'oci:out', ...extra], { cwd: top, ...NO_HANG });
}

/** Every layer of a built layout, decompressed. */
function layers(out: string): Buffer[] {
  const dir = join(out, 'blobs', 'sha256');
  return readdirSync(dir)
    .map((n) => readFileSync(join(dir, n)))
    .filter((b) => b[0] === 0x1f && b[1] === 0x8b)
    .map((b) => gunzipSync(b));
}

function listing(out: string): string[] {
  return layers(out).flatMap((tar) => {
    const r = spawnSync('tar', ['-tvf', '-'], { input: tar, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    return r.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(/\s+/).slice(5).join(' '));
  });
}

const files = (src: string) => spec(`files:\n  - src: ${JSON.stringify(src)}\n    dst: usr/share/demo/x\n`);

describe('build and validate refuse sources that leave the bundle folder', () => {
  const cases: { name: string; yaml: string; plant?: (dir: string, top: string) => void; line: string }[] = [
    { name: 'src: ../outside.txt', yaml: files('../outside.txt'), line: 'bundle/bundle.yaml: files.0.src: "../outside.txt" leaves the bundle folder' },
    { name: 'src: /etc/passwd', yaml: files('/etc/passwd'), line: 'bundle/bundle.yaml: files.0.src: "/etc/passwd" leaves the bundle folder (an absolute path)' },
    {
      name: 'a symlinked parent folder to an absolute path',
      yaml: files('lib/passwd'),
      plant: (d) => symlinkSync('/etc', join(d, 'lib')),
      line: 'bundle/bundle.yaml: files.0.src: "lib/passwd" leaves the bundle folder: lib is a symlink to /etc',
    },
    {
      name: 'a symlinked parent folder climbing out with ../../',
      yaml: files('assets/up/outside.txt'),
      plant: (d) => {
        mkdirSync(join(d, 'assets'));
        symlinkSync('../../', join(d, 'assets/up'));
      },
      line: 'bundle/bundle.yaml: files.0.src: "assets/up/outside.txt" leaves the bundle folder: assets/up is a symlink to ../../',
    },
    {
      name: 'a symlink chain that leaves on its second hop',
      yaml: files('a/outside.txt'),
      plant: (d) => {
        symlinkSync('b', join(d, 'a'));
        symlinkSync('..', join(d, 'b'));
      },
      line: 'bundle/bundle.yaml: files.0.src: "a/outside.txt" leaves the bundle folder: b is a symlink to ..',
    },
    {
      name: 'a symlink loop',
      yaml: files('loop/x'),
      plant: (d) => symlinkSync('loop', join(d, 'loop')),
      line: 'bundle/bundle.yaml: files.0.src: "loop/x": too many levels of symbolic links (at loop)',
    },
    {
      name: 'a path through a file (ENOTDIR)',
      yaml: files('x.txt/inner'),
      plant: (d) => writeFileSync(join(d, 'x.txt'), 'x\n'),
      line: 'bundle/bundle.yaml: files.0.src: file not found: x.txt/inner',
    },
    {
      name: 'a hard link to a file outside',
      yaml: files('assets'),
      plant: (d, top) => {
        mkdirSync(join(d, 'assets'));
        writeFileSync(join(d, 'assets/ok.txt'), 'ok\n');
        linkSync(join(top, 'outside.txt'), join(d, 'assets/hl'));
      },
      line: 'bundle/bundle.yaml: files.0.src: assets/hl is a hard link to a file outside the bundle folder',
    },
    {
      name: 'a FIFO in assets',
      yaml: files('assets'),
      plant: (d) => {
        mkdirSync(join(d, 'assets'));
        mkfifo(join(d, 'assets/pipe'));
      },
      line: 'bundle/bundle.yaml: files.0.src: assets/pipe is a FIFO; only regular files, folders and symlinks can be sources',
    },
    {
      name: 'a FIFO as run.sh',
      yaml: spec('run: run.sh\n', 'run'),
      plant: (d) => mkfifo(join(d, 'run.sh')),
      line: 'bundle/bundle.yaml: run: run.sh is a FIFO; only regular files, folders and symlinks can be sources',
    },
    {
      name: 'a manifest that is a symlink to a file outside',
      yaml: spec('manifests:\n  - src: m.yaml\n', 'run'),
      plant: (d) => symlinkSync('../outside.txt', join(d, 'm.yaml')),
      line: 'bundle/bundle.yaml: manifests.0.src: "m.yaml" leaves the bundle folder: m.yaml is a symlink to ../outside.txt',
    },
    {
      name: 'a FIFO as a manifest',
      yaml: spec('manifests:\n  - src: m.yaml\n', 'run'),
      plant: (d) => mkfifo(join(d, 'm.yaml')),
      line: 'bundle/bundle.yaml: manifests.0.src: m.yaml is a FIFO; only regular files, folders and symlinks can be sources',
    },
    {
      name: 'bundle.yaml itself a symlink to a file outside',
      yaml: '',
      plant: (d, top) => {
        writeFileSync(join(top, 'spec.yaml'), files('x'));
        writeFileSync(join(d, 'x'), 'x\n');
        const p = join(d, 'bundle.yaml');
        spawnSync('rm', [p]);
        symlinkSync('../spec.yaml', p);
      },
      line: 'bundle/bundle.yaml: "bundle.yaml" leaves the bundle folder: bundle.yaml is a symlink to ../spec.yaml',
    },
    {
      name: 'bundle.yaml a FIFO',
      yaml: '',
      plant: (d) => {
        spawnSync('rm', [join(d, 'bundle.yaml')]);
        mkfifo(join(d, 'bundle.yaml'));
      },
      line: 'bundle/bundle.yaml: bundle.yaml is a FIFO; only regular files, folders and symlinks can be sources',
    },
  ];

  for (const c of cases) {
    it(`build: ${c.name}`, () => {
      const { top } = bundle(c.yaml, c.plant);
      const r = build(top);
      expectRefused(r, c.line);
      expect(existsSync(join(top, 'out')), 'nothing written to the output').toBe(false);
      expect(r.stdout).not.toContain('SECRET');
    });
    it(`validate: ${c.name}`, () => {
      const { top } = bundle(c.yaml, c.plant);
      expectRefused(kbundle(['validate', 'bundle'], { cwd: top, ...NO_HANG }), c.line);
    });
  }
});

describe('symlinks inside a bundle folder', () => {
  it('are copied as symlinks, their targets never read; links that stay inside are followed; hard links inside are fine', () => {
    const { top } = bundle(
      spec(['files:', '  - src: assets', '    dst: usr/share/demo', '  - src: passwd-link', '    dst: usr/share/passwd', '  - src: inner/tool', '    dst: usr/bin/tool', ''].join('\n')),
      (d, top) => {
        mkdirSync(join(d, 'assets'));
        writeFileSync(join(d, 'assets/a.txt'), 'a\n');
        linkSync(join(d, 'assets/a.txt'), join(d, 'assets/a-again.txt'));
        symlinkSync('/etc/passwd', join(d, 'assets/passwd'));
        symlinkSync('../../outside.txt', join(d, 'assets/up'));
        symlinkSync(join(top, 'outside.txt'), join(d, 'assets/abs'));
        symlinkSync('loop2', join(d, 'assets/loop1'));
        symlinkSync('loop1', join(d, 'assets/loop2'));
        symlinkSync('/etc/passwd', join(d, 'passwd-link'));
        mkdirSync(join(d, 'real'));
        writeFileSync(join(d, 'real/tool'), 'tool\n');
        symlinkSync('real', join(d, 'inner'));
      },
    );
    const r = build(top, '--platform', 'linux/amd64');
    expect(r.code, r.stderr).toBe(0);
    const l = listing(join(top, 'out'));
    expect(l).toEqual(
      expect.arrayContaining([
        'usr/share/demo/passwd -> /etc/passwd',
        'usr/share/demo/up -> ../../outside.txt',
        `usr/share/demo/abs -> ${join(top, 'outside.txt')}`,
        'usr/share/demo/loop1 -> loop2',
        'usr/share/demo/loop2 -> loop1',
        'usr/share/passwd -> /etc/passwd',
        'usr/bin/tool',
        'usr/share/demo/a.txt',
        'usr/share/demo/a-again.txt',
      ]),
    );
    const all = Buffer.concat(layers(join(top, 'out'))).toString('latin1');
    expect(all).not.toContain(SECRET.trim());
    expect(all).not.toContain('root:x:0:0');
    expect(all).toContain('tool\n');
  });
});

describe('catalog build', () => {
  it('refuses a bundle whose source leaves its folder, and a bundle folder that is a symlink out of the catalog, writing nothing', () => {
    const top = tempDir('kbundle-hostile-cat-');
    const cat = join(top, 'cat');
    mkdirSync(join(cat, 'good'), { recursive: true });
    writeFileSync(join(cat, 'good/bundle.yaml'), files('x').replace('name: demo', 'name: good'));
    writeFileSync(join(cat, 'good/x'), 'x\n');
    mkdirSync(join(cat, 'bad'));
    writeFileSync(join(cat, 'bad/bundle.yaml'), files('lib/shadow').replace('name: demo', 'name: bad'));
    symlinkSync('/etc', join(cat, 'bad/lib'));
    const r = kbundle(['catalog', 'build', '-C', 'cat', '-o', 'oci:out'], { cwd: top, ...NO_HANG });
    expectRefused(r, 'cat/bad/bundle.yaml: files.0.src: "lib/shadow" leaves the bundle folder: lib is a symlink to /etc');
    expect(existsSync(join(top, 'out'))).toBe(false);

    spawnSync('rm', ['-rf', join(cat, 'bad')]);
    mkdirSync(join(top, 'elsewhere'));
    writeFileSync(join(top, 'elsewhere/bundle.yaml'), files('x').replace('name: demo', 'name: elsewhere'));
    writeFileSync(join(top, 'elsewhere/x'), 'x\n');
    symlinkSync('../elsewhere', join(cat, 'evil'));
    const e = kbundle(['catalog', 'build', '-C', 'cat', '-o', 'oci:out'], { cwd: top, ...NO_HANG });
    expectRefused(e, 'cat: "evil" leaves the catalog folder: evil is a symlink to ../elsewhere');
    expect(existsSync(join(top, 'out'))).toBe(false);
  });

  it('refuses a FIFO in a bundle folder without hanging on it', () => {
    const top = tempDir('kbundle-hostile-cat-');
    const cat = join(top, 'cat');
    mkdirSync(join(cat, 'b/assets'), { recursive: true });
    writeFileSync(join(cat, 'b/bundle.yaml'), files('assets').replace('name: demo', 'name: b'));
    mkfifo(join(cat, 'b/assets/pipe'));
    const r = kbundle(['catalog', 'build', '-C', 'cat', '-o', 'oci:out'], { cwd: top, ...NO_HANG });
    expectRefused(r, 'cat/b/bundle.yaml: files.0.src: assets/pipe is a FIFO; only regular files, folders and symlinks can be sources');
    expect(existsSync(join(top, 'out'))).toBe(false);
  });
});

describe('catalog lint, index and import read README.md as a source', () => {
  it('a README.md that is a FIFO or a symlink out is a problem, never a hang or a leak', () => {
    const top = tempDir('kbundle-hostile-cat-');
    const cat = join(top, 'cat');
    for (const n of ['fifo', 'leak']) {
      mkdirSync(join(cat, n), { recursive: true });
      writeFileSync(join(cat, n, 'bundle.yaml'), files('x').replace('name: demo', `name: ${n}`));
      writeFileSync(join(cat, n, 'x'), 'x\n');
    }
    mkfifo(join(cat, 'fifo/README.md'));
    writeFileSync(join(top, 'outside.md'), `# ${SECRET}`);
    symlinkSync('../../outside.md', join(cat, 'leak/README.md'));
    const r = kbundle(['catalog', 'lint', '-C', 'cat'], { cwd: top, ...NO_HANG });
    expect(r.stdout).toContain('cat/fifo/README.md: cat/fifo/README.md: README.md is a FIFO; only regular files, folders and symlinks can be sources\n');
    expect(r.stdout).toContain('cat/leak/README.md: cat/leak/README.md: "README.md" leaves the bundle folder: README.md is a symlink to ../../outside.md\n');
    expectRefused(r, '2 problem(s) in cat');
    const ix = kbundle(['catalog', 'index', '-C', 'cat', '-o', 'site', '--layout', 'none'], { cwd: top, ...NO_HANG });
    expect(ix.code, ix.stderr).toBe(0);
    expect(readFileSync(join(top, 'site/index.json'), 'utf8')).not.toContain('SECRET');
  });
});

describe('sysext build', () => {
  /** A tree with usr/ plus what `plant` adds. */
  function tree(plant: (t: string, top: string) => void): { top: string; t: string } {
    const top = tempDir('kbundle-hostile-ext-');
    writeFileSync(join(top, 'outside.txt'), SECRET);
    const t = join(top, 'tree');
    mkdirSync(join(t, 'usr/share/demo'), { recursive: true });
    writeFileSync(join(t, 'usr/share/demo/ok.txt'), 'ok\n');
    plant(t, top);
    return { top, t };
  }
  const sysext = (top: string, dir: string) => kbundle(['sysext', 'build', dir, '--name', 'demo', '-o', 'out', '--fs', 'squashfs'], { cwd: top, ...NO_HANG });

  it('refuses a FIFO in the tree, without hanging and without output', () => {
    const { top } = tree((t) => mkfifo(join(t, 'usr/share/demo/pipe')));
    const r = sysext(top, 'tree');
    expectRefused(r, 'tree: usr/share/demo/pipe is a FIFO; only regular files, folders and symlinks can be sources');
    // mksquashfs packs while the tree is checked: it is killed, and its staging folder and the
    // output folder this run made are gone.
    expect(existsSync(join(top, 'out'))).toBe(false);
  });

  it('refuses a hard link to a file outside the tree', () => {
    const { top } = tree((t, top) => linkSync(join(top, 'outside.txt'), join(t, 'usr/share/demo/hl')));
    const r = sysext(top, 'tree');
    expectRefused(r, 'tree: usr/share/demo/hl is a hard link to a file outside the tree');
    expect(existsSync(join(top, 'out'))).toBe(false);
  });

  it('refuses a FIFO deep in a large tree while mksquashfs packs it, into an existing output folder: nothing added there', () => {
    const { top } = tree((t) => {
      // 32 MiB of incompressible files before the FIFO: mksquashfs is still packing when the walk refuses it.
      for (let i = 0; i < 32; i++) writeFileSync(join(t, `usr/share/demo/blob-${String(i).padStart(2, '0')}`), randomBytes(1024 * 1024));
      mkdirSync(join(t, 'usr/share/zz'));
      mkfifo(join(t, 'usr/share/zz/pipe'));
    });
    mkdirSync(join(top, 'out'));
    writeFileSync(join(top, 'out/keep.txt'), 'mine\n');
    const r = sysext(top, 'tree');
    expectRefused(r, 'tree: usr/share/zz/pipe is a FIFO; only regular files, folders and symlinks can be sources');
    expect(readdirSync(join(top, 'out'))).toEqual(['keep.txt']);
  });

  it('keeps a symlink out of the tree as a symlink (nothing read from outside)', () => {
    const { top } = tree((t) => symlinkSync('/etc/passwd', join(t, 'usr/share/demo/passwd')));
    const r = kbundle(['sysext', 'build', 'tree', '--name', 'demo', '-o', 'out', '--fs', 'squashfs', '--format', 'plain'], { cwd: top, ...NO_HANG });
    expect(r.code, r.stderr).toBe(0);
    const ls = mustRun('unsquashfs', ['-lls', join(top, 'out/demo.sysext.raw')]);
    expect(ls).toMatch(/usr\/share\/demo\/passwd -> \/etc\/passwd/);
    expect(readFileSync(join(top, 'out/demo.sysext.raw')).toString('latin1')).not.toContain('root:x:0:0');
  });

  it('refuses a type: sysext bundle whose src leaves the bundle folder', () => {
    const yaml = spec('files:\n  - src: usr/lib/os-release\n    dst: usr/lib/x\n', 'sysext');
    const { top } = bundle(yaml, (d) => {
      mkdirSync(join(d, 'usr'));
      symlinkSync('/usr/lib', join(d, 'usr/lib'));
    });
    const r = kbundle(['sysext', 'build', 'bundle', '-o', 'out', '--arch', 'amd64'], { cwd: top, ...NO_HANG });
    expectRefused(r, 'bundle/bundle.yaml: files.0.src: "usr/lib/os-release" leaves the bundle folder: usr/lib is a symlink to /usr/lib');
    expect(existsSync(join(top, 'out'))).toBe(false);
  });
});

describe('Dockerfile builds (community-bundles folders)', () => {
  function folder(dockerfile: string, plant: (d: string) => void): string {
    const top = tempDir('kbundle-hostile-df-');
    const d = join(top, 'bundle');
    mkdirSync(d);
    writeFileSync(join(d, 'Dockerfile'), dockerfile);
    plant(d);
    return top;
  }

  it('refuses a COPY source through a symlinked folder out of the bundle', () => {
    const top = folder('FROM scratch\nCOPY lib/passwd /\n', (d) => symlinkSync('/etc', join(d, 'lib')));
    expectRefused(build(top), 'bundle/Dockerfile:2: COPY lib/passwd /: the source "lib/passwd" leaves the bundle folder: lib is a symlink to /etc');
    expect(existsSync(join(top, 'out'))).toBe(false);
  });

  it('refuses a named COPY source that is a symlink to a file outside', () => {
    const top = folder('FROM scratch\nCOPY evil /\n', (d) => symlinkSync('/etc/passwd', join(d, 'evil')));
    expectRefused(build(top), 'bundle/Dockerfile:2: COPY evil /: the source "evil" leaves the bundle folder: evil is a symlink to /etc/passwd');
    expect(existsSync(join(top, 'out'))).toBe(false);
  });

  it('refuses a glob under a symlinked folder out of the bundle', () => {
    const top = folder('FROM scratch\nCOPY lib/pass* /x/\n', (d) => symlinkSync('/etc', join(d, 'lib')));
    expectRefused(build(top), 'bundle/Dockerfile:2: COPY lib/pass* /x/: the source "lib/pass*" leaves the bundle folder: lib is a symlink to /etc');
  });

  it('refuses a FIFO in a copied folder without hanging', () => {
    const top = folder('FROM scratch\nCOPY assets /assets\n', (d) => {
      mkdirSync(join(d, 'assets'));
      mkfifo(join(d, 'assets/pipe'));
    });
    expectRefused(build(top), 'bundle/Dockerfile:2: COPY assets /assets: assets/pipe is a FIFO; only regular files, folders and symlinks can be sources');
    expect(existsSync(join(top, 'out'))).toBe(false);
  });

  it('refuses a Dockerfile that is a FIFO without hanging', () => {
    const top = folder('', (d) => {
      spawnSync('rm', [join(d, 'Dockerfile')]);
      mkfifo(join(d, 'Dockerfile'));
    });
    expectRefused(build(top), 'bundle/Dockerfile: Dockerfile is a FIFO; only regular files, folders and symlinks can be sources');
  });
});
