/**
 * `kbundle image`: the container image a Kairos operator NodeOp runs with the host at /host, and
 * the way onto musl nodes. One layer per platform holding the node executable, the shared
 * libraries it loads (read from its ELF NEEDED entries and interpreter, resolved in a sysroot:
 * `/` for this machine's architecture, an unpacked Debian sysroot for another), a CA bundle and
 * /tmp. Entrypoint /usr/local/bin/kbundle. Reproducible: fixed mtimes, owners and order.
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

/** The executable's library closure: image path → real file on this machine. */
export function libraryClosure(p: NodeImagePlatform): Map<string, string> {
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
  const queue = [p.executable];
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
  for (const [imagePath, real] of libraryClosure(p)) files.push(file(imagePath.slice(1), real, 0o755));
  const dirs = new Set<string>(['tmp']);
  for (const f of files) for (let d = dirname(f.path); d !== '.'; d = dirname(d)) dirs.add(d);
  const entries: LayerEntry[] = [...[...dirs].map((d): LayerEntry => ({ type: 'directory', path: d, mode: d === 'tmp' ? 0o1777 : 0o755 })), ...files];
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
      run: { Entrypoint: ['/usr/local/bin/kbundle'], Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'], WorkingDir: '/' },
    });
    manifests.push(image.manifest);
  }
  return writeIndexIfNeeded(layout, manifests);
}
