/**
 * Confinement of a bundle's run.sh under `install --root DIR`. run.sh is code from the bundle
 * author; on a node (root `/`) it runs on the host as Kairos runs it, but under `--root` it must
 * not touch the machine kbundle runs on. It runs in a private mount and pid namespace whose `/`
 * is a read-only tmpfs holding:
 * - DIR's own top-level folders, bound writable (so `/etc`, `/var`, `/usr/local`, `/oem` are DIR's);
 * - when DIR is not a whole OS (no os-release and /bin/sh: a bare folder), this host's `/usr`, `/bin`, `/sbin`,
 *   `/lib*` read-only, with DIR's `/usr/local` on top, so the script finds its tools;
 * - a private `/dev` (null, zero, full, random, urandom, tty), `/proc` of the new pid namespace and
 *   an empty `/tmp` and `/run`;
 * - `/run/kbundle/bundle`, the extracted image (CONTAINERDIR), and `/run/kbundle/bin/kairos-agent`,
 *   which answers `config get` from the given cloud-config (or DIR's config files) as the node's
 *   agent would.
 * When run.sh exits, the pid namespace ends and every process it left behind is killed.
 * Needs `unshare`, `mount` and `chroot` (util-linux, coreutils) and root or user namespaces.
 */
import { existsSync, lstatSync, realpathSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { KbError } from '../errors.js';
import { dirname, join, relative } from 'node:path';
import type { ConfigValue } from './kairos-config.js';

/** Paths inside the confined root. */
export const JAIL_BUNDLE_DIR = '/run/kbundle/bundle';
const JAIL_KBUNDLE = '/run/kbundle';

const SETUP_SCRIPT = String.raw`set -eu
fail() { echo "kbundle-jail: $*" >&2; exit 125; }
mount -t tmpfs -o mode=0755,nosuid kbundle-root "$KBJ_J" || fail "cannot mount a tmpfs on $KBJ_J"
for e in "$KBJ_ROOT"/* "$KBJ_ROOT"/.[!.]*; do
  [ -e "$e" ] || [ -L "$e" ] || continue
  n=$(basename "$e")
  case "$n" in proc|dev|sys|tmp|run) continue ;; esac
  if [ "$KBJ_HOSTTOOLS" = 1 ]; then case "$n" in bin|sbin|lib|lib32|lib64|libx32|usr) continue ;; esac; fi
  if [ -L "$e" ]; then ln -s "$(readlink "$e")" "$KBJ_J/$n"
  elif [ -d "$e" ]; then mkdir "$KBJ_J/$n"; mount --rbind "$e" "$KBJ_J/$n"
  elif [ -f "$e" ]; then : > "$KBJ_J/$n"; mount --bind "$e" "$KBJ_J/$n"
  fi
done
if [ "$KBJ_HOSTTOOLS" = 1 ]; then
  for n in bin sbin lib lib32 lib64 libx32; do
    if [ -L "/$n" ]; then ln -s "$(readlink "/$n")" "$KBJ_J/$n"
    elif [ -d "/$n" ]; then mkdir "$KBJ_J/$n"; mount --bind -o ro "/$n" "$KBJ_J/$n"
    fi
  done
  mkdir "$KBJ_J/usr"; mount --bind -o ro /usr "$KBJ_J/usr"
  [ -d "$KBJ_J/usr/local" ] || fail "this host has no /usr/local to bind $KBJ_ROOT/usr/local on"
  mount --rbind "$KBJ_ROOT/usr/local" "$KBJ_J/usr/local"
fi
mkdir "$KBJ_J/dev"; mount -t tmpfs -o mode=0755,nosuid kbundle-dev "$KBJ_J/dev"
for d in null zero full random urandom tty; do
  [ -e "/dev/$d" ] || continue
  : > "$KBJ_J/dev/$d"; mount --bind "/dev/$d" "$KBJ_J/dev/$d"
done
ln -s /proc/self/fd "$KBJ_J/dev/fd"; ln -s fd/0 "$KBJ_J/dev/stdin"; ln -s fd/1 "$KBJ_J/dev/stdout"; ln -s fd/2 "$KBJ_J/dev/stderr"
mkdir "$KBJ_J/proc"; mount -t proc -o nosuid,nodev,noexec proc "$KBJ_J/proc"
mkdir "$KBJ_J/tmp"; mount -t tmpfs -o mode=1777,nosuid,nodev kbundle-tmp "$KBJ_J/tmp"
mkdir "$KBJ_J/run"; mount -t tmpfs -o mode=0755,nosuid,nodev kbundle-run "$KBJ_J/run"
mkdir "$KBJ_J/run/kbundle"; mount --bind -o ro "$KBJ_KB" "$KBJ_J/run/kbundle"
mount --bind "$KBJ_BUNDLE" "$KBJ_J/run/kbundle/bundle"
mount --bind -o ro "$KBJ_SELF_EXEC" "$KBJ_J/run/kbundle/runtime"
[ -z "$KBJ_SELF_PKG" ] || mount --bind -o ro "$KBJ_SELF_PKG" "$KBJ_J/run/kbundle/pkg"
mount -o remount,ro,bind "$KBJ_J" 2>/dev/null || mount -o remount,ro "$KBJ_J" || fail "cannot make the confined / read-only"
unset KBJ_KB KBJ_BUNDLE KBJ_SELF_EXEC KBJ_SELF_PKG KBJ_ROOT KBJ_HOSTTOOLS
echo ready >&3
exec 3>&-
cd /
J=$KBJ_J; unset KBJ_J
exec chroot "$J" /bin/sh -c 'cd /run/kbundle/bundle && exec /bin/sh run.sh'
`;

export interface JailLayout {
  /** Host folder prepared by `prepareJail`: mount point, kbundle files, the bundle mount point. */
  dir: string;
  /** Where the image is extracted (bound at /run/kbundle/bundle). */
  bundleDir: string;
}

/** How this kbundle runs: the executable, plus its package folder and script when run by node. */
function selfInvocation(): { exec: string; pkg?: string; script?: string } {
  const exec = realpathSync(process.execPath);
  const arg = process.argv[1];
  if (!arg || !/\.(c|m)?js$/.test(arg)) return { exec };
  const script = realpathSync(arg);
  let pkg = dirname(script);
  while (!existsSync(join(pkg, 'package.json')) && dirname(pkg) !== pkg) pkg = dirname(pkg);
  return { exec, pkg, script: relative(pkg, script) };
}

/**
 * Lay out the host side of the jail in `dir` (a staging folder): mount point, bundle folder and
 * the kairos-agent stand-in with the configuration it answers from.
 */
export async function prepareJail(dir: string, config: ConfigValue): Promise<JailLayout & { env: Record<string, string> }> {
  const self = selfInvocation();
  const kb = join(dir, 'kbundle');
  await mkdir(join(dir, 'jail'));
  await mkdir(join(kb, 'bundle'), { recursive: true });
  await mkdir(join(kb, 'bin'));
  if (self.pkg) await mkdir(join(kb, 'pkg'));
  await writeFile(join(kb, 'runtime'), '');
  await writeFile(join(kb, 'config.json'), JSON.stringify(config));
  const runtime = self.pkg ? `${JAIL_KBUNDLE}/runtime ${JAIL_KBUNDLE}/pkg/${self.script}` : `${JAIL_KBUNDLE}/runtime`;
  await writeFile(
    join(kb, 'bin', 'kairos-agent'),
    `#!/bin/sh\n# kairos-agent for a confined run.sh: kbundle answers \`config get\` as the node's agent would.\nexec env -i KBUNDLE_KAIROS_CONFIG=${JAIL_KBUNDLE}/config.json ${runtime} __kairos-agent "$@"\n`,
  );
  await chmod(join(kb, 'bin', 'kairos-agent'), 0o755);
  const bundleDir = join(dir, 'bundle');
  await mkdir(bundleDir);
  return {
    dir,
    bundleDir,
    env: { KBJ_J: join(dir, 'jail'), KBJ_KB: kb, KBJ_BUNDLE: bundleDir, KBJ_SELF_EXEC: self.exec, KBJ_SELF_PKG: self.pkg ?? '' },
  };
}

/** The folders a Kairos node can write to; the jail's own `/` is read-only, as a node's is. */
const NODE_WRITABLE = ['etc', 'var', 'opt', 'oem', 'usr', 'usr/local'];

/**
 * Create the writable node folders `root` lacks. A symlink among them is left alone at the top
 * (the jail resolves it inside the root) but refused for usr and usr/local, which are bound by path.
 */
export async function ensureNodeFolders(root: string): Promise<void> {
  for (const rel of NODE_WRITABLE) {
    const p = join(root, rel);
    let st;
    try {
      st = lstatSync(p);
    } catch {
      await mkdir(p, { mode: 0o755 });
      continue;
    }
    if (st.isSymbolicLink() && rel.startsWith('usr'))
      throw new KbError('REFUSED', `${p} is a symbolic link; a confined run.sh binds it by path`, { hint: 'make it a folder, or pass --unconfined-scripts' });
  }
}

/** Whether `root` is a whole OS (its own tools): it has an os-release, as every systemd-era distribution does. */
export function isOsTree(root: string): boolean {
  return ['etc/os-release', 'usr/lib/os-release'].some((p) => existsSync(join(root, p))) && existsSync(join(root, 'bin', 'sh'));
}

/** The command that runs run.sh confined to `root`; it writes "ready" to fd 3 once the jail stands. */
export function jailCommand(root: string, jailEnv: Record<string, string>): { file: string; args: string[]; env: Record<string, string> } {
  const hostTools = isOsTree(root) ? '0' : '1';
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  return {
    file: 'unshare',
    args: ['--mount', '--pid', '--fork', '--kill-child', '--propagation', 'private', ...(asRoot ? [] : ['--map-root-user']), '/bin/sh', '-c', SETUP_SCRIPT],
    env: { ...jailEnv, KBJ_ROOT: root, KBJ_HOSTTOOLS: hostTools },
  };
}

/** PATH inside the jail: the kairos-agent stand-in first, then the usual places. */
export const JAIL_PATH = `${JAIL_KBUNDLE}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`;
