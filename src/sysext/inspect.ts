import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { KbError, UserError } from '../errors.js';
import { openFilesystem, type FsView } from './fsread.js';
import { probeFilesystem, readAt, readGpt, type Designator, type GptPartition } from './gpt.js';
import { parseReleaseFile, type ReleaseFields } from './release.js';
import { parseSignaturePartition, type VeritySignature } from './sign.js';
import { KINDS, type ExtensionKind } from '../kairos/extensions.js';
import { checkVerity, type VerityCheck } from './verity.js';

/** What an extension image holds, read from the file itself (no loop device, no mount). */
export interface ImageInfo {
  path: string;
  fileName: string;
  size: number;
  format: 'ddi' | 'plain';
  /** The partition that carries the file system (root, or usr), or the whole file. */
  designator: Designator;
  /** systemd architecture from the partition type (DDI only). */
  partitionArch?: string;
  fsType?: string;
  fsOffset: number;
  fsSize: number;
  partitions: GptPartition[];
  diskUuid?: string;
  /** Other DPS data partitions (e.g. a usr next to root). */
  otherData: GptPartition[];
  verity?: {
    partition: GptPartition;
    check: VerityCheck;
    /** Root hash the partition UUIDs announce (data UUID ‖ hash UUID, systemd's convention). */
    uuidRootHash: string;
  };
  signature?: { partition: GptPartition; json?: VeritySignature; error?: string };
  /** Every file under the release directory: name → fields. */
  releaseFiles: Map<string, ReleaseFields>;
  /**
   * Release files tagged `user.extension-release.strict` = false, which systemd accepts for any
   * image name when exactly one exists. Read only when the wanted release file is missing;
   * undefined when not read or when the image's xattrs cannot be read (erofs).
   */
  relaxedReleases?: string[];
  /** Top-level entries of the file system. */
  topLevel: string[];
  /** Every path in the file system (relative). */
  paths: string[];
  hasOsRelease: boolean;
  warnings: string[];
}

export const STRICT_XATTR = 'user.extension-release.strict';

/** systemd's parse_boolean(); undefined for anything else. */
function parseBoolean(v: string): boolean | undefined {
  const s = v.replace(/\0+$/, '').trim().toLowerCase();
  if (['1', 'yes', 'y', 'true', 't', 'on'].includes(s)) return true;
  if (['0', 'no', 'n', 'false', 'f', 'off'].includes(s)) return false;
  return undefined;
}

/**
 * `releaseName`: the extension-release name the node will look for; when the image lacks it, the
 * release files' strict xattrs are read (systemd's fallback for renamed images).
 */
export async function inspectImage(path: string, kind: ExtensionKind = 'sysext', releaseName?: string, what = path): Promise<ImageInfo> {
  let st;
  try {
    st = await stat(path);
  } catch {
    throw new KbError('NOT_FOUND', `${path}: no such file`);
  }
  if (!st.isFile()) throw new UserError(`${path}: not a regular file`);
  const warnings: string[] = [];
  const gpt = await readGpt(path, what);
  let info: ImageInfo;
  if (gpt) {
    const data = gpt.partitions.filter((p) => p.dps?.role === 'data');
    const main = data.find((p) => p.dps!.designator === 'root') ?? data.find((p) => p.dps!.designator === 'usr');
    if (!main) {
      throw new UserError(
        `${what}: GPT image without a root or usr partition of the Discoverable Partitions Specification`,
        'systemd-sysext only merges DDIs with a root (or usr) partition; build it with kbundle sysext build',
      );
    }
    const dps = main.dps!;
    const sibling = (role: 'verity' | 'verity-sig') => gpt.partitions.find((p) => p.dps?.designator === dps.designator && p.dps.arch === dps.arch && p.dps.role === role);
    info = {
      path,
      fileName: basename(path),
      size: st.size,
      format: 'ddi',
      designator: dps.designator,
      partitionArch: dps.arch,
      fsType: await probeFilesystem(path, main.offset),
      fsOffset: main.offset,
      fsSize: main.size,
      partitions: gpt.partitions,
      diskUuid: gpt.diskUuid,
      otherData: data.filter((p) => p !== main),
      releaseFiles: new Map(),
      topLevel: [],
      paths: [],
      hasOsRelease: false,
      warnings,
    };
    const vp = sibling('verity');
    if (vp) {
      const check = await checkVerity(path, { offset: main.offset, size: main.size }, { offset: vp.offset, size: vp.size }, `${what}: ${vp.dps!.name}`);
      info.verity = { partition: vp, check, uuidRootHash: (main.uuid + vp.uuid).replace(/-/g, '') };
    }
    const sp = sibling('verity-sig');
    if (sp) {
      const buf = await readAt(path, sp.offset, Math.min(sp.size, 1024 * 1024));
      try {
        info.signature = { partition: sp, json: parseSignaturePartition(buf, what) };
      } catch (e) {
        info.signature = { partition: sp, error: (e as Error).message };
      }
    }
  } else {
    info = {
      path,
      fileName: basename(path),
      size: st.size,
      format: 'plain',
      designator: 'root',
      fsType: await probeFilesystem(path, 0),
      fsOffset: 0,
      fsSize: st.size,
      partitions: [],
      otherData: [],
      releaseFiles: new Map(),
      topLevel: [],
      paths: [],
      hasOsRelease: false,
      warnings,
    };
  }
  if (!info.fsType) throw new UserError(`${what}: neither a GPT disk image nor a squashfs/erofs file system`, 'extension images are .raw DDIs or bare squashfs/erofs images');
  const fs = await openFilesystem(path, info.fsType, info.fsOffset, info.fsSize, what);
  try {
    const dir = KINDS[kind].releaseDir;
    info.paths = fs.paths;
    info.topLevel = fs.paths.filter((p) => !p.includes('/'));
    info.hasOsRelease = fs.paths.includes('usr/lib/os-release');
    for (const p of fs.paths) {
      const m = p.startsWith(`${dir}/extension-release.`) && !p.slice(dir.length + 1).includes('/');
      if (!m) continue;
      const body = await fs.read(p);
      info.releaseFiles.set(p.slice(dir.length + 1 + 'extension-release.'.length), body ? parseReleaseFile(body.toString('utf8')) : new Map());
    }
    if (releaseName !== undefined && !info.releaseFiles.has(releaseName)) info.relaxedReleases = await relaxedReleases(fs, dir, [...info.releaseFiles.keys()]);
  } finally {
    await fs.close();
  }
  return info;
}

/** The release files tagged strict=false; undefined when the file system view cannot read xattrs. */
async function relaxedReleases(fs: FsView, dir: string, names: string[]): Promise<string[] | undefined> {
  const relaxed: string[] = [];
  for (const name of names) {
    const v = await fs.userXattr(`${dir}/extension-release.${name}`, STRICT_XATTR);
    if (v === null) return undefined;
    if (v !== undefined && parseBoolean(v) === false) relaxed.push(name);
  }
  return relaxed;
}
