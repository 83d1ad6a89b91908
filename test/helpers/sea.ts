/**
 * The node executable in tests: built once per test file from this checkout (or taken from
 * KBUNDLE_SEA_DIR, e.g. dist/sea after `npm run sea`), and a root file system that holds only
 * that executable, its shared-library closure, a CA bundle and /bin/sh — no node, no node_modules.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { REPO_ROOT } from './cli.js';
import { tempDir } from './exec.js';
import { APT_DEADLINE_MS } from './spawn-deadline.js';

export type SeaPlatform = 'linux/amd64' | 'linux/arm64';

/**
 * The executables for `platforms`: KBUNDLE_SEA_DIR, else dist/sea when test/setup.sh built it,
 * else (or with `fresh`) a new build into a fresh folder (minutes on a cold npm cache).
 */
export function buildSea(platforms: SeaPlatform[], opts: { fresh?: boolean } = {}): string {
  if (process.env.KBUNDLE_SEA_DIR) return process.env.KBUNDLE_SEA_DIR;
  const built = join(REPO_ROOT, 'dist/sea');
  if (!opts.fresh && platforms.every((p) => existsSync(join(built, `kbundle-${p.replace('/', '-')}`)))) return built;
  const out = tempDir('kbundle-sea-');
  const args = [join(REPO_ROOT, 'dist/src/sea/build.js'), '--out', out, ...platforms.flatMap((p) => ['--platform', p])];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', cwd: REPO_ROOT, timeout: APT_DEADLINE_MS });
  if (r.status !== 0) throw new Error(`npm run sea failed:\n${r.stdout}\n${r.stderr}`);
  return out;
}

/** The libraries `ldd` says an executable loads, loader included (host architecture only). */
export function lddClosure(executable: string): string[] {
  const out = execFileSync('ldd', [executable], { encoding: 'utf8' });
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]!);
  }
  return libs;
}

function copyInto(root: string, path: string, mode?: number): void {
  const dst = join(root, path);
  mkdirSync(dirname(dst), { recursive: true });
  copyFileSync(realpathSync(path), dst); // the real file under the name the loader asks for
  if (mode !== undefined) chmodSync(dst, mode);
}

export interface NodelessRoot {
  dir: string;
  /** Runs a command inside the root (chroot), with a minimal environment. */
  run(args: string[], env?: Record<string, string>): { code: number; stdout: string; stderr: string };
}

/**
 * A root holding /usr/local/bin/kbundle, its ldd closure, /bin/sh (run.sh of run:// bundles is a
 * shell script, as on every Kairos node) and, unless `caBundle` is false, a CA bundle at
 * /etc/ssl/certs/ca-certificates.crt (`extraCa` appended).
 */
export function nodelessRoot(executable: string, opts: { caBundle?: boolean; extraCa?: string; tools?: string[]; install?: boolean } = {}): NodelessRoot {
  const dir = tempDir('kbundle-nodeless-');
  const exe = join(dir, 'usr/local/bin/kbundle');
  mkdirSync(dirname(exe), { recursive: true });
  // install: false leaves /usr/local/bin/kbundle to be installed (e.g. by the catalog bundle); the
  // libraries it needs are there already, as on a Kairos node.
  if (opts.install !== false) {
    copyFileSync(executable, exe);
    chmodSync(exe, 0o755);
  }
  for (const lib of lddClosure(executable)) copyInto(dir, lib);
  // Host programs the node has too: /bin/sh, and whatever a test names (e.g. unsquashfs).
  for (const tool of ['/bin/sh', ...(opts.tools ?? [])]) {
    copyInto(dir, tool, 0o755);
    for (const lib of lddClosure(tool)) copyInto(dir, lib);
  }
  mkdirSync(join(dir, 'tmp'), { recursive: true, mode: 0o1777 });
  // Child processes get /dev/null as stdin, as on any node.
  mkdirSync(join(dir, 'dev'));
  execFileSync('mknod', ['-m', '666', join(dir, 'dev/null'), 'c', '1', '3']);
  if (opts.caBundle !== false) {
    mkdirSync(join(dir, 'etc/ssl/certs'), { recursive: true });
    const system = existsSync('/etc/ssl/certs/ca-certificates.crt') ? readFileSync('/etc/ssl/certs/ca-certificates.crt', 'utf8') : '';
    writeFileSync(join(dir, 'etc/ssl/certs/ca-certificates.crt'), system + (opts.extraCa ?? ''));
  }
  return {
    dir,
    run(args, env = {}) {
      const r = spawnSync(CHROOT, [dir, '/usr/local/bin/kbundle', ...args], {
        encoding: 'utf8',
        env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', ...env },
      });
      return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
    },
  };
}

const CHROOT = ['/usr/sbin/chroot', '/usr/bin/chroot', '/sbin/chroot'].find((p) => existsSync(p)) ?? 'chroot';

/** Whether this process may chroot (root, and a chroot binary). */
export function canChroot(): boolean {
  return process.getuid?.() === 0 && spawnSync(CHROOT, ['--version']).status === 0;
}
