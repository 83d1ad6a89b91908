/**
 * `kbundle image`: the container image a Kairos operator NodeOp runs with the host at /host, and
 * the way onto musl nodes. One layer per platform holding the node executable, the programs
 * kbundle itself runs on a node (NODE_TOOLS: the confinement of run.sh, reading extension
 * images, zstd layers), the shared libraries all of them load (read from their ELF NEEDED entries
 * and interpreters, resolved in a sysroot: `/` for this machine's architecture, an unpacked Debian
 * sysroot for another), a CA bundle and /tmp. Entrypoint /usr/local/bin/kbundle. Reproducible:
 * fixed mtimes, owners and order.
 */
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync, lstatSync, readlinkSync, statSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { writeIndexIfNeeded, writeLayerBlob, writeSingleLayerImage } from '../layer/image.js';
import { compareEntryPaths, type LayerEntry } from '../layer/tar.js';
import { KbError, UserError } from '../errors.js';
import { Annotation } from '../oci/mediatypes.js';
import type { Descriptor } from '../oci/types.js';
import type { OciLayout } from '../store/oci-layout.js';

export interface NodeImagePlatform {
  platform: string;
  executable: string;
  /** Where the executable's libraries are looked up (default `/`, this machine). */
  sysroot: string;
}

export interface NodeImageOptions {
  platforms: NodeImagePlatform[];
  caFile: string;
  epoch: number;
  version: string;
}

/**
 * The external programs kbundle runs on a node (grep src for spawn/runTool), taken from the
 * sysroot's Debian packages. `file` is the program's own name when it differs (sh is dash).
 * Not here: systemctl (only `sysext --now` with root `/`, never in a container), systemd-sysext,
 * mkfs tools and openssl signing (workstation side), git and credential helpers.
 */
export const NODE_TOOLS: { name: string; file?: string; pkg: string; why: string }[] = [
  { name: 'sh', file: 'dash', pkg: 'dash', why: 'run.sh and the confinement script' },
  { name: 'unshare', pkg: 'util-linux', why: 'confined run.sh under --root (src/extract/confine.ts)' },
  { name: 'mount', pkg: 'mount', why: 'confined run.sh: bind mounts, tmpfs, proc' },
  { name: 'chroot', pkg: 'coreutils', why: 'confined run.sh' },
  { name: 'mkdir', pkg: 'coreutils', why: 'confinement script' },
  { name: 'ln', pkg: 'coreutils', why: 'confinement script' },
  { name: 'readlink', pkg: 'coreutils', why: 'confinement script' },
  { name: 'basename', pkg: 'coreutils', why: 'confinement script' },
  { name: 'env', pkg: 'coreutils', why: 'the kairos-agent stand-in inside the confinement' },
  { name: 'mknod', pkg: 'coreutils', why: 'device nodes with --allow-devices' },
  { name: 'unsquashfs', pkg: 'squashfs-tools', why: 'sysext check/install of squashfs images' },
  { name: 'fsck.erofs', pkg: 'erofs-utils', why: 'sysext check/install of erofs images' },
  { name: 'getfattr', pkg: 'attr', why: 'sysext: extended attributes of image files' },
  { name: 'setfattr', pkg: 'attr', why: 'extended attributes of extracted layer files' },
  { name: 'zstd', pkg: 'zstd', why: 'zstd-compressed layers' },
  { name: 'openssl', pkg: 'openssl', why: 'sysext: PKCS#7 signatures over the verity root hash' },
];

/** Where programs are looked up in a sysroot (Debian's bookworm packages still ship /bin and /sbin). */
const PROGRAM_DIRS = ['/usr/bin', '/usr/sbin', '/bin', '/sbin'];

const LIB_DIRS: Record<string, string[]> = {
  amd64: ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib'],
  arm64: ['/lib/aarch64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib'],
};

/** NEEDED entries and the interpreter of an ELF file (readelf, from binutils). */
function elfDependencies(file: string): { needed: string[]; interpreter?: string } {
  let out: string;
  try {
    out = execFileSync('readelf', ['-d', '-l', '-W', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    throw new KbError((e as NodeJS.ErrnoException).code === 'ENOENT' ? 'NOT_FOUND' : 'INVALID_INPUT', `${file}: cannot read its ELF headers (${(e as Error).message.split('\n')[0]})`, {
      hint: 'kbundle image needs readelf (binutils) on the build machine',
    });
  }
  const needed = [...out.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]!);
  const interpreter = /Requesting program interpreter: ([^\]]+)\]/.exec(out)?.[1];
  return { needed, interpreter };
}

/** A path inside `sysroot`, following symlinks without leaving it (absolute targets are re-rooted). */
function resolveIn(sysroot: string, path: string, depth = 0): string | undefined {
  if (depth > 16) return undefined;
  const parts = path.split('/').filter(Boolean);
  let cur = '/';
  for (let i = 0; i < parts.length; i++) {
    const next = posix.join(cur, parts[i]!);
    const host = join(sysroot, next);
    let st;
    try {
      st = lstatSync(host);
    } catch {
      return undefined;
    }
    if (st.isSymbolicLink()) {
      const target = readlinkSync(host);
      const joined = target.startsWith('/') ? target : posix.join(cur, target);
      return resolveIn(sysroot, posix.join(joined, ...parts.slice(i + 1)), depth + 1);
    }
    cur = next;
  }
  return cur;
}

/** A program of NODE_TOOLS in the sysroot: the real file on this machine. */
export function findProgram(p: NodeImagePlatform, tool: (typeof NODE_TOOLS)[number]): string {
  const file = tool.file ?? tool.name;
  for (const d of PROGRAM_DIRS) {
    const real = resolveIn(p.sysroot, posix.join(d, file));
    if (real && statSync(join(p.sysroot, real)).isFile()) return join(p.sysroot, real);
  }
  throw new KbError('NOT_FOUND', `${p.platform}: ${file} (Debian package ${tool.pkg}; kbundle needs it on a node for ${tool.why}) is in none of ${PROGRAM_DIRS.join(', ')} under ${p.sysroot}`, {
    hint: p.sysroot === '/' ? `install it: apt-get install -y ${tool.pkg}` : `unpack ${tool.pkg} for that architecture into the sysroot (see test/setup-arm64.sh)`,
  });
}

/** The library closure of `elfs` (the executable and the tools): image path → real file on this machine. */
export function libraryClosure(p: NodeImagePlatform, elfs: string[] = [p.executable]): Map<string, string> {
  const arch = p.platform.split('/')[1]!;
  const dirs = LIB_DIRS[arch];
  if (!dirs) throw new UserError(`--platform ${p.platform}: kbundle image knows linux/amd64 and linux/arm64`);
  const files = new Map<string, string>();
  const add = (imagePath: string): string => {
    const real = resolveIn(p.sysroot, imagePath);
    if (!real)
      throw new KbError('NOT_FOUND', `${p.platform}: ${imagePath} is not in the sysroot ${p.sysroot}`, {
        hint: p.sysroot === '/' ? 'install the library, or pass --sysroot' : 'unpack libc6, libstdc++6 and libgcc-s1 for that architecture into the sysroot (see test/setup-arm64.sh)',
      });
    files.set(imagePath, join(p.sysroot, real));
    return join(p.sysroot, real);
  };
  const queue = [...elfs];
  const seen = new Set<string>();
  while (queue.length) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const deps = elfDependencies(file);
    if (deps.interpreter && !files.has(deps.interpreter)) queue.push(add(deps.interpreter));
    for (const lib of deps.needed) {
      const at = dirs.map((d) => posix.join(d, lib)).find((c) => resolveIn(p.sysroot, c));
      if (!at) throw new KbError('NOT_FOUND', `${p.platform}: ${lib} (needed by ${file}) is in none of ${dirs.join(', ')} under ${p.sysroot}`);
      if (!files.has(at)) queue.push(add(at));
    }
  }
  return files;
}

function entriesFor(p: NodeImagePlatform, caFile: string): LayerEntry[] {
  const file = (path: string, src: string, mode: number): LayerEntry => ({ type: 'file', path, mode, size: statSync(src).size, open: () => createReadStream(src, { highWaterMark: 1 << 20 }) });
  const files: LayerEntry[] = [file('usr/local/bin/kbundle', p.executable, 0o755), file('etc/ssl/certs/ca-certificates.crt', caFile, 0o644)];
  // Every tool in /usr/bin, /bin pointing there (merged /usr, as Debian 12): `/bin/sh` is what
  // run.sh and the confinement start, PATH finds the rest.
  const links: LayerEntry[] = [{ type: 'symlink', path: 'bin', target: 'usr/bin' }];
  const tools = NODE_TOOLS.map((t) => ({ t, real: findProgram(p, t) }));
  for (const { t, real } of tools) {
    const name = t.file ?? t.name;
    if (!files.some((f) => f.path === `usr/bin/${name}`)) files.push(file(`usr/bin/${name}`, real, 0o755));
    if (t.file) links.push({ type: 'symlink', path: `usr/bin/${t.name}`, target: t.file });
  }
  for (const [imagePath, real] of libraryClosure(p, [p.executable, ...tools.map((x) => x.real)])) files.push(file(imagePath.slice(1), real, 0o755));
  const dirs = new Set<string>(['tmp']);
  for (const f of files) for (let d = dirname(f.path); d !== '.'; d = dirname(d)) dirs.add(d);
  const entries: LayerEntry[] = [...[...dirs].map((d): LayerEntry => ({ type: 'directory', path: d, mode: d === 'tmp' ? 0o1777 : 0o755 })), ...files, ...links];
  return entries.sort((a, b) => compareEntryPaths(a.path, b.path));
}

/** Writes the image into `layout`; returns its root (an index for several platforms). */
export async function buildNodeImage(layout: OciLayout, opts: NodeImageOptions): Promise<Descriptor> {
  if (!existsSync(opts.caFile)) throw new KbError('NOT_FOUND', `${opts.caFile}: no CA bundle there`, { hint: 'pass --ca-file <pem> (the image needs one for registry TLS)' });
  const mtime = new Date(opts.epoch * 1000);
  const created = mtime.toISOString().replace(/\.000Z$/, 'Z');
  const manifests: Descriptor[] = [];
  for (const p of opts.platforms) {
    if (!existsSync(p.executable)) throw new KbError('NOT_FOUND', `${p.executable}: no executable for ${p.platform}`, { hint: 'build it with: npm run sea' });
    const layer = await writeLayerBlob(layout, entriesFor(p, opts.caFile), { mtime, uid: 0, gid: 0, level: 6 });
    const annotations = {
      [Annotation.Created]: created,
      [Annotation.Title]: 'kbundle',
      [Annotation.Version]: opts.version,
      [Annotation.Licenses]: 'Apache-2.0',
      [Annotation.Description]: 'kbundle node executable: verify, install and sysext on Kairos nodes',
    };
    const image = await writeSingleLayerImage(layout, {
      platform: p.platform,
      created,
      createdBy: `kbundle image (${p.platform})`,
      annotations,
      layer,
      run: { Entrypoint: ['/usr/local/bin/kbundle'], Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'], WorkingDir: '/' },
    });
    manifests.push(image.manifest);
  }
  return writeIndexIfNeeded(layout, manifests);
}
