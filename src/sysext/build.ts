import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { copyFile, link, lstat, mkdir, open, readdir, readlink, rmdir, stat, symlink, truncate, writeFile, chmod } from 'node:fs/promises';
import { commitFile, flushEarly, withStagingDir } from '../util/atomic-write.js';
import { dirname, join, resolve } from 'node:path';
import { KbError, UserError } from '../errors.js';
import { dpsTypeUuid, readGpt, setPartitionUuids, type GptPartition } from './gpt.js';
import { KAIROS_SYSEXT_HIERARCHIES, uncoveredInTree } from './hierarchies.js';
import { formatExtensionRelease, imageNameFromFile, MODERN_NAMES_SINCE, validateExtensionName, type ReleaseSpec } from './release.js';
import { signRootHash } from './sign.js';
import { lastLines, runTool } from './tools.js';
import { hostSystemdArch, KINDS, systemdArch, type ExtensionKind } from '../kairos/extensions.js';
import { defaultFilesystem } from '../kairos/systemd-version.js';
import { computeVerity, LeafHashers, VERITY_BLOCK, verityHashSize } from './verity.js';
import { pathExists } from '../fs-util.js';
import { SourceFolder } from '../layer/source-folder.js';

export type ImageFormat = 'ddi' | 'plain';

/**
 * Where systemd-repart puts the first partition of a fresh GPT when the image is larger than a
 * few MiB (libfdisk's 1 MiB grain). Small images get 4 KiB alignment (LBA 40); then the file system
 * is copied into place instead (cheap at that size).
 */
const FIRST_PARTITION_OFFSET = 1024 * 1024;

/** Copy `len` bytes from `from`@`srcPos` to `to`@`dstPos`; optionally set `to`'s final size. */
async function copyRange(from: string, srcPos: number, to: string, dstPos: number, len: number, finalSize?: number): Promise<void> {
  const src = await open(from, 'r');
  const dst = await open(to, 'r+');
  try {
    const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
    for (let done = 0; done < len;) {
      const n = Math.min(buf.length, len - done);
      const { bytesRead } = await src.read(buf, 0, n, srcPos + done);
      if (bytesRead !== n) throw new UserError(`${from}: short read at ${srcPos + done}`);
      await dst.write(buf, 0, n, dstPos + done);
      done += n;
    }
    if (finalSize !== undefined) await dst.truncate(finalSize);
  } finally {
    await src.close();
    await dst.close();
  }
}
async function writeAt(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

interface DiskLayout {
  work: string;
  arch: string;
  seed: string;
  epoch: number;
  dataSize: number;
  hashSize: number;
  sigSize?: number;
  /** File (in work) systemd-repart copies into the root partition; undefined: left for the caller. */
  rootImage?: string;
  out: string;
}

/**
 * Have systemd-repart write the GPT from kbundle's repart.d definitions: root, root-verity and
 * (signed) root-verity-sig partitions of fixed sizes, read-only, UUIDs from the seed. The hash and
 * signature partitions are filled in by the caller.
 */
function layOutDisk(l: DiskLayout): Promise<string> {
  // Synchronous up to the spawn: the caller starts this right before blocking its thread on hashing.
  const defs = join(l.work, 'repart.d');
  mkdirSync(defs, { recursive: true });
  const part = (type: string, file: string | undefined, size: number, uuid?: string) =>
    ['[Partition]', `Type=${type}`, ...(uuid ? [`UUID=${uuid}`] : []), ...(file ? [`CopyBlocks=/${file}`] : []), `SizeMinBytes=${size}`, `SizeMaxBytes=${size}`, 'ReadOnly=yes', ''].join('\n');
  // Placeholders until the root hash is known (see setPartitionUuids).
  writeFileSync(join(defs, '10-root.conf'), part(dpsTypeUuid('root', l.arch, 'data'), l.rootImage, l.dataSize, uuidV5(l.seed, 'root placeholder')));
  writeFileSync(join(defs, '20-root-verity.conf'), part(dpsTypeUuid('root', l.arch, 'verity'), undefined, l.hashSize, uuidV5(l.seed, 'root-verity placeholder')));
  if (l.sigSize) writeFileSync(join(defs, '30-root-verity-sig.conf'), part(dpsTypeUuid('root', l.arch, 'verity-sig'), undefined, l.sigSize));
  const repart = runTool('systemd-repart', [`--definitions=${defs}`, `--root=${l.work}`, '--empty=create', '--size=auto', '--dry-run=no', '--discard=no', `--seed=${l.seed}`, '--json=off', l.out], {
    env: { ...process.env, SOURCE_DATE_EPOCH: String(l.epoch), SYSTEMD_LOG_LEVEL: 'warning' },
  });
  return repart.then((r) => {
    if (r.code !== 0) throw new UserError(`systemd-repart failed: ${lastLines(r.stderr)}`);
    return l.out;
  });
}

export type FsType = 'squashfs' | 'erofs';

export interface SysextBuildOptions {
  kind?: ExtensionKind;
  /** Extension name: the file is `<name>.sysext.raw`, the release file `extension-release.<name>`. */
  name: string;
  /** Folder holding usr/ and opt/ (confext: etc/). */
  tree: string;
  outDir: string;
  format?: ImageFormat;
  /** Default `auto`: erofs where the build host's systemd makes DDIs itself (≥ 255), else squashfs. */
  fs?: FsType | 'auto';
  release?: ReleaseSpec;
  /** Architecture of the partition types (systemd name); default: release ARCHITECTURE, else the host's. */
  arch?: string;
  key?: string;
  cert?: string;
  /** Seconds since the epoch for every timestamp. */
  sourceDateEpoch?: number;
  /** UUID every derived UUID (disk, signature partition, verity salt) comes from. */
  seed?: string;
  /** Override the output file name (default `<name>.sysext.raw`). */
  fileName?: string;
  /**
   * Also write the release file under the image name systemd < 256 derives from the file name
   * (`extension-release.NAME.sysext` for NAME.sysext.raw), so one image merges on both. Default true.
   */
  compatRelease?: boolean;
  onWarning?: (msg: string) => void;
}

export interface SysextBuildResult {
  /** The extension name (extension-release.NAME). */
  name: string;
  path: string;
  fileName: string;
  format: ImageFormat;
  fs: FsType;
  size: number;
  release: string;
  rootHash?: string;
  signed: boolean;
  partitions: GptPartition[];
  seed: string;
}

/** RFC 4122 name-based UUID v5 (SHA-1), as Go's uuid.NewV5. */
export function uuidV5(namespace: string, name: string): string {
  const ns = Buffer.from(namespace.replace(/-/g, ''), 'hex');
  const h = createHash('sha1').update(ns).update(name).digest().subarray(0, 16);
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  return formatUuid(h);
}
const NAMESPACE_DNS = '6ba7b810-9dad-11d1-80b4-00c04fd430c8';

export function formatUuid(b: Buffer): string {
  const x = b.toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** AuroraBoot's fixed seed: uuid.NewV5(uuid.NamespaceDNS, "kairos-sysext") (confext: "kairos-confext"). */
export function defaultSeed(kind: ExtensionKind): string {
  return uuidV5(NAMESPACE_DNS, `kairos-${kind}`);
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Refuse trees systemd would not merge the way the user expects, before anything is written. */
async function validateTree(tree: string, kind: ExtensionKind, name: string): Promise<string[]> {
  const k = KINDS[kind];
  let st;
  try {
    st = await stat(tree);
  } catch {
    throw new KbError('NOT_FOUND', `${tree}: no such directory`, {
      hint: 'give a folder, or an image as oci:<dir>[:tag], oci-archive:<file>, docker-archive:<file> or docker://<registry>/<repo>:<tag>',
    });
  }
  if (!st.isDirectory()) throw new UserError(`${tree}: not a directory`, `give the folder holding ${k.hierarchies.map((h) => `${h}/`).join(' and ')}`);
  const top = (await readdir(tree)).sort();
  const others = top.filter((n) => !k.hierarchies.includes(n));
  if (others.length) {
    throw new UserError(
      `${tree}: ${others.map((o) => `${o}`).join(', ')} ${others.length > 1 ? 'are' : 'is'} outside ${k.hierarchies.map((h) => `${h}/`).join(' and ')}`,
      `systemd-${kind} only merges ${k.hierarchies.map((h) => `/${h}`).join(' and ')}; move those files under ${k.hierarchies.join('/ or ')}/ or drop them`,
    );
  }
  const present = top.filter((n) => k.hierarchies.includes(n));
  if (present.length === 0) throw new UserError(`${tree}: has no ${k.hierarchies.map((h) => `${h}/`).join(' or ')}`, 'nothing to put in the extension');
  for (const h of present) {
    const s = await lstat(join(tree, h));
    if (!s.isDirectory()) throw new UserError(`${tree}/${h} must be a directory (it is a ${s.isSymbolicLink() ? 'symlink' : 'file'})`);
  }
  if (kind === 'sysext' && (await pathExists(join(tree, 'usr/lib/os-release')))) {
    throw new UserError(`${tree}: contains usr/lib/os-release`, 'systemd refuses extensions that ship an os-release (on 252 the whole merge fails); remove it');
  }
  const relDir = join(tree, k.releaseDir);
  if (await pathExists(relDir)) {
    const found = (await readdir(relDir)).filter((n) => n.startsWith('extension-release.'));
    if (found.length) {
      throw new UserError(
        `${tree}: already has ${k.releaseDir}/${found.join(', ')}`,
        `kbundle writes ${k.releaseDir}/extension-release.${name} from --id/--version-id/--sysext-level/--arch; remove the file from the tree`,
      );
    }
  }
  return present;
}

/**
 * mksquashfs and mkfs.erofs pack the tree as it is: walk it through the one source mechanism
 * (src/layer/source-folder.ts), so a FIFO, socket or device, or a file hard-linked to one outside
 * the tree, is refused with its path, and the build fails before any image leaves its private
 * (0700) staging folder. Symlinks are packed as symlinks, never followed.
 */
function checkTreeSources(tree: string, present: string[], shown: string): void {
  const folder = new SourceFolder(tree, 'the tree');
  for (const h of present) folder.walk(join(folder.root, h), shown, () => undefined);
}

/** Hard-link (or copy, across file systems) `src` into `dst`, keeping modes and symlinks. */
async function linkTree(src: string, dst: string): Promise<void> {
  const st = await lstat(src);
  if (st.isDirectory()) {
    await mkdir(dst);
    await chmod(dst, st.mode & 0o7777);
    for (const n of await readdir(src)) await linkTree(join(src, n), join(dst, n));
  } else if (st.isSymbolicLink()) {
    await symlink(await readlink(src), dst);
  } else if (st.isFile()) {
    try {
      await link(src, dst);
    } catch {
      await copyFile(src, dst);
      await chmod(dst, st.mode & 0o7777);
    }
  } else {
    throw new KbError('UNSUPPORTED', `${src}: device, socket or FIFO files are not supported in extensions`);
  }
}

async function buildSquashfs(
  tree: string,
  present: string[],
  out: string,
  work: string,
  kind: ExtensionKind,
  releaseNames: string[],
  release: string,
  epoch: number,
  offset: number,
  whileRunning: () => Promise<void>,
): Promise<void> {
  const k = KINDS[kind];
  const relFile = join(work, 'extension-release');
  await writeFile(relFile, release);
  const t = String(epoch);
  const pseudo: string[] = [];
  const parts = k.releaseDir.split('/');
  for (let i = 1; i <= parts.length; i++) {
    const rel = parts.slice(0, i).join('/');
    if (!(await pathExists(join(tree, rel)))) pseudo.push('-p', `${rel} D ${t} 755 0 0`);
  }
  const q = relFile.replace(/'/g, `'\\''`);
  for (const n of releaseNames) pseudo.push('-p', `${k.releaseDir}/extension-release.${n} F ${t} 644 0 0 cat '${q}'`);
  const args = [...present.map((h) => join(tree, h)), out, '-noappend', '-all-root', '-all-time', t, '-mkfs-time', t, '-no-xattrs', '-root-mode', '755', '-quiet', '-no-progress'];
  if (present.length === 1) args.push('-keep-as-directory');
  if (offset) args.push('-offset', String(offset));
  args.push(...pseudo);
  const env = { ...process.env };
  delete env.SOURCE_DATE_EPOCH; // mksquashfs refuses it together with -all-time/-mkfs-time
  const stop = new AbortController();
  const running = runTool('mksquashfs', args, { env, signal: stop.signal });
  try {
    await whileRunning();
  } catch (e) {
    stop.abort(e);
    await running.catch(() => undefined); // gone before its folder is removed
    throw e;
  }
  const r = await running;
  if (r.code !== 0) throw new UserError(`mksquashfs failed: ${lastLines(r.stderr || r.stdout.toString())}`);
}

async function buildErofs(tree: string, present: string[], out: string, work: string, kind: ExtensionKind, releaseNames: string[], release: string, epoch: number, seed: string): Promise<void> {
  const k = KINDS[kind];
  const stage = join(work, 'stage');
  await mkdir(stage);
  await chmod(stage, 0o755);
  for (const h of present) await linkTree(join(tree, h), join(stage, h));
  const relDir = join(stage, k.releaseDir);
  const parts = k.releaseDir.split('/');
  for (let i = 1; i <= parts.length; i++) {
    const d = join(stage, ...parts.slice(0, i));
    if (!(await pathExists(d))) {
      await mkdir(d);
      await chmod(d, 0o755);
    }
  }
  for (const n of releaseNames) {
    await writeFile(join(relDir, `extension-release.${n}`), release, { mode: 0o644 });
    await chmod(join(relDir, `extension-release.${n}`), 0o644);
  }
  const fsUuid = formatUuid(createHash('sha256').update(`${seed}:erofs`).digest().subarray(0, 16));
  const r = await runTool('mkfs.erofs', ['-zlz4hc', '--all-root', `-T${epoch}`, `-U${fsUuid}`, '-x-1', '--quiet', out, stage]);
  if (r.code !== 0) throw new UserError(`mkfs.erofs failed: ${lastLines(r.stderr || r.stdout.toString())}`);
}

/**
 * Build a system (or configuration) extension image from a folder:
 * - `ddi` (default): a GPT Discoverable Disk Image with the file system in the root partition,
 *   a dm-verity hash partition, and a verity signature partition when a key and certificate are
 *   given — what Kairos's image policy accepts. The GPT is written by systemd-repart from
 *   kbundle's own repart.d definitions (fixed seed); the hash tree and signature are computed by
 *   kbundle so the result is reproducible with Debian's systemd 252 too.
 * - `plain`: the bare squashfs/erofs file system, for hosts without a verity policy.
 */
export async function buildSysext(opts: SysextBuildOptions): Promise<SysextBuildResult> {
  const kind = opts.kind ?? 'sysext';
  const k = KINDS[kind];
  validateExtensionName(opts.name);
  const format = opts.format ?? 'ddi';
  const fsType: FsType = opts.fs === undefined || opts.fs === 'auto' ? (await defaultFilesystem()).fs : opts.fs;
  if (!!opts.key !== !!opts.cert) throw new UserError('--key and --cert go together', 'give both to sign the verity root hash, or neither');
  if (opts.key && format === 'plain') throw new UserError('--key/--cert sign the verity root hash; a plain image has none', 'drop --format plain, or the key');
  const seed = (opts.seed ?? defaultSeed(kind)).toLowerCase();
  if (!UUID_RE.test(seed)) throw new UserError(`--seed: "${opts.seed}" is not a UUID`);
  const releaseSpec: ReleaseSpec = { ...opts.release };
  if (releaseSpec.architecture !== undefined) releaseSpec.architecture = systemdArch(releaseSpec.architecture);
  const arch = opts.arch ? systemdArch(opts.arch) : releaseSpec.architecture && releaseSpec.architecture !== '_any' ? releaseSpec.architecture : hostSystemdArch();
  if (arch === '_any') throw new UserError('--arch _any: a disk image needs one architecture for its partition types');
  const release = formatExtensionRelease(kind, releaseSpec);
  const epoch = opts.sourceDateEpoch ?? 0;
  const tree = resolve(opts.tree);
  const present = await validateTree(tree, kind, opts.name);
  // Walks every entry of the tree: run while mksquashfs packs it (a refused entry kills mksquashfs
  // before anything leaves the private staging folder), before mkfs.erofs, which links the tree.
  const checkSources = async (): Promise<void> => {
    checkTreeSources(tree, present, opts.tree);
    if (kind !== 'sysext') return;
    const outside = await uncoveredInTree(tree, KAIROS_SYSEXT_HIERARCHIES);
    if (outside.length) {
      opts.onWarning?.(
        `${opts.name}: ${outside.map((p) => `/${p}`).join(', ')} ${outside.length > 1 ? 'are' : 'is'} outside the directories a Kairos node merges (its systemd-sysext drop-in sets SYSTEMD_SYSEXT_HIERARCHIES=${KAIROS_SYSEXT_HIERARCHIES.join(':')}); only nodes that add ${outside.length > 1 ? 'them' : 'it'} to that list will see ${outside.length > 1 ? 'those files' : 'that'}`,
      );
    }
  };
  const fileName = opts.fileName ?? `${opts.name}${k.suffix}`;
  if (!fileName.endsWith('.raw') || fileName.includes('/')) throw new UserError(`output name "${fileName}" must be a file name ending in .raw`);
  // systemd < 256 (Debian 12: 252, Ubuntu 24.04: 255) names an image by its file name without
  // ".raw" only, so NAME.sysext.raw is "NAME.sysext" there and needs extension-release.NAME.sysext;
  // 256 and later strip ".sysext.raw" and read extension-release.NAME. Both files: one image for both.
  const oldName = imageNameFromFile(fileName, MODERN_NAMES_SINCE - 1);
  const releaseNames = opts.compatRelease !== false && oldName !== opts.name ? [opts.name, oldName] : [opts.name];

  const outDir = resolve(opts.outDir);
  const madeOutDir = await mkdir(outDir, { recursive: true });
  // The verity hashing threads boot while the file system is built, so they are ready when it is
  // done (created once mksquashfs has started: creating a thread costs this thread a few ms).
  let hashers: LeafHashers | undefined;
  const bootHashers = () => {
    if (format === 'ddi') hashers ??= new LeafHashers();
  };
  try {
    return await withStagingDir(outDir, kind, async (work) => {
      const fsImg = join(work, 'root.img');
      const finalPath = join(outDir, fileName);
      let rootHash: string | undefined;
      let partitions: GptPartition[] = [];
      let tmpOut: string;
      let flushing: Promise<void> | undefined;
      // squashfs DDIs: mksquashfs writes the file system straight into the image at the offset where
      // systemd-repart places the first partition, so its bytes are never copied again.
      const inPlace = format === 'ddi' && fsType === 'squashfs';
      const image = join(work, 'image.raw');
      if (fsType === 'squashfs') {
        await buildSquashfs(tree, present, inPlace ? image : fsImg, work, kind, releaseNames, release, epoch, inPlace ? FIRST_PARTITION_OFFSET : 0, async () => {
          bootHashers();
          await checkSources();
        });
      } else if (fsType === 'erofs') {
        await checkSources();
        bootHashers();
        await buildErofs(tree, present, fsImg, work, kind, releaseNames, release, epoch, seed);
      } else throw new UserError(`--fs: "${fsType as string}" must be squashfs or erofs`);

      if (format === 'plain') {
        opts.onWarning?.(
          `${fileName}: a plain ${fsType} image has no dm-verity; Kairos's image policy (root=verity+absent:usr=verity+absent) refuses it at boot — use it only on hosts without a verity policy`,
        );
        tmpOut = fsImg;
      } else {
        const dataFile = inPlace ? image : fsImg;
        // The file system is the bulk of the image: on its way to disk while it is hashed and the
        // partition table is laid out.
        flushing = inPlace ? flushEarly(image) : undefined;
        const dataOffset = inPlace ? FIRST_PARTITION_OFFSET : 0;
        const fsSize = (await stat(dataFile)).size - dataOffset;
        // At least two blocks: a one-block verity tree has no hash level, an edge case best avoided.
        const dataSize = Math.max(2 * VERITY_BLOCK, Math.ceil(fsSize / VERITY_BLOCK) * VERITY_BLOCK);
        await truncate(dataFile, dataOffset + dataSize);
        const salt = createHash('sha256').update(`kbundle verity salt:${seed}`).digest();
        const vuuid = createHash('sha256').update(`kbundle verity uuid:${seed}`).digest().subarray(0, 16);
        // The partition table depends on the sizes only, so systemd-repart lays it out while the
        // hash tree is computed: it is started right before this thread starts hashing. The root
        // and hash partition UUIDs are the halves of the root hash (systemd's convention):
        // placeholders first, set once the hash is known. A signature's size is only known after
        // signing, so signed images are laid out after it.
        const layout = (sigSize?: number) =>
          layOutDisk({ work, arch, seed, epoch, dataSize, hashSize: verityHashSize(dataSize), sigSize, rootImage: inPlace ? undefined : 'root.img', out: inPlace ? join(work, 'gpt.raw') : image });
        const signing = !!(opts.key && opts.cert);
        let laying: Promise<string | undefined> = Promise.resolve(undefined);
        const startLayout = () => {
          try {
            laying = layout();
          } catch (e) {
            laying = Promise.reject(e);
          }
        };
        const hashing = computeVerity(dataFile, dataSize, { salt, uuid: vuuid }, dataOffset, hashers, signing ? undefined : startLayout);
        const [hashed, laidOut] = await Promise.allSettled([hashing, laying]);
        if (hashed.status === 'rejected') throw hashed.reason;
        if (laidOut.status === 'rejected') throw laidOut.reason;
        const verity = hashed.value;
        rootHash = verity.rootHash.toString('hex');
        const sig = signing ? await signRootHash(rootHash, resolve(opts.key!), resolve(opts.cert!)) : undefined;
        const repartOut = laidOut.value ?? (await layout(sig!.partition.length));
        const gpt = await readGpt(repartOut);
        if (!gpt) throw new UserError('systemd-repart wrote no partition table');
        const byRole = (role: string) => gpt.partitions.find((p) => p.dps?.role === role);
        const data = byRole('data');
        const hashPart = byRole('verity');
        const sigPart = byRole('verity-sig');
        if (!data || data.size !== dataSize || !hashPart || hashPart.size !== verity.hashImage.length || (sig && sigPart?.size !== sig.partition.length)) {
          throw new UserError(
            `systemd-repart laid out partitions of unexpected sizes (${gpt.partitions.map((p) => `${p.dps?.name ?? p.typeUuid}: ${p.size}`).join(', ')})`,
            'please report this with your systemd-repart --version',
          );
        }
        tmpOut = image;
        if (inPlace) {
          const total = (await stat(repartOut)).size;
          if (data.offset === FIRST_PARTITION_OFFSET) {
            // The file system is already in place: take the primary GPT (with the protective MBR)
            // and the backup GPT behind the last partition from repart's output.
            const lastEnd = Math.max(...gpt.partitions.map((p) => p.offset + p.size));
            await copyRange(repartOut, 0, image, 0, FIRST_PARTITION_OFFSET);
            await copyRange(repartOut, lastEnd, image, lastEnd, total - lastEnd, total);
          } else {
            // A small image, aligned to 4 KiB: copy the file system into repart's output instead.
            await copyRange(image, FIRST_PARTITION_OFFSET, repartOut, data.offset, dataSize);
            tmpOut = repartOut;
          }
        }
        await writeAt(tmpOut, hashPart.offset, verity.hashImage);
        if (sig && sigPart) await writeAt(tmpOut, sigPart.offset, sig.partition);
        const uuids = new Map([
          [data.index, formatUuid(verity.rootHash.subarray(0, 16))],
          [hashPart.index, formatUuid(verity.rootHash.subarray(16, 32))],
        ]);
        await setPartitionUuids(tmpOut, uuids, gpt.sectorSize);
        partitions = gpt.partitions.map((p) => ({ ...p, uuid: uuids.get(p.index) ?? p.uuid }));
      }
      await chmod(tmpOut, 0o644);
      await flushing;
      await commitFile(tmpOut, finalPath);
      const st = await stat(finalPath);
      return { name: opts.name, path: finalPath, fileName, format, fs: fsType, size: st.size, release, rootHash, signed: !!opts.key, partitions, seed };
    });
  } catch (e) {
    if (madeOutDir) await removeEmptyDirs(outDir, madeOutDir);
    throw e;
  } finally {
    await hashers?.close();
  }
}

/** After a failed build: the output folders this run created, from `dir` up to `top`, if still empty. */
async function removeEmptyDirs(dir: string, top: string): Promise<void> {
  for (let d = dir; ; d = dirname(d)) {
    try {
      await rmdir(d);
    } catch {
      return; // not empty (someone else's files), or gone
    }
    if (d === top || dirname(d) === d) return;
  }
}
