/**
 * Install records: what kbundle installed on a node, so `kbundle status` (and a rollout's
 * preflight) can say "this node already has that digest" without a registry.
 *
 *   <root>/var/lib/kbundle/installed/<name>.json    one file per installed image
 *
 * A record is keyed by what was installed, not by its version: the scheme and the image name
 * (`run://127.0.0.1:5000/kairos/metallb`, `sysext:127.0.0.1:5000/kairos/tools`); installing
 * another tag or digest of the same image replaces its record. The file name is derived from that
 * key (safe characters only, plus a hash of the key so two keys never share a file).
 *
 * The node root is trusted but what bundles extracted into it is not: a container:// bundle may
 * have planted a symlink at var/lib/kbundle to get kbundle (root) to write elsewhere. Every
 * component of the state path must be a real folder; a symlink is refused (REFUSED, as for the
 * root's lock). All writes go through `writeInstallRecord`, so a root-confined file layer can
 * replace it in one place.
 */
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { errorMessage, KbError } from '../errors.js';
import { parseReference } from '../registry/reference.js';
import { isStagingName, writeFileAtomic } from '../util/atomic-write.js';
import { STATE_PATH, stateDir } from '../util/state-dir.js';
import { VERSION } from '../version.js';

/** Records live in `<root>/var/lib/kbundle/installed/`: persists across Kairos reboots and upgrades. */
export const RECORDS_DIR = 'installed';
/** A record file is small; anything larger is not one of ours. */
const MAX_RECORD_BYTES = 64 * 1024;

export const INSTALLED_KINDS = ['bundle', 'sysext', 'confext'] as const;
export type InstalledKind = (typeof INSTALLED_KINDS)[number];

const RecordSchema = z.object({
  version: z.literal(1),
  kind: z.enum(INSTALLED_KINDS),
  /** What was installed, as given: run://…, container://…, oci:…, file:… */
  target: z.string().min(1),
  /** run, container, docker (bundles); oci, docker, container, file, http, https (extensions). */
  scheme: z.string().min(1),
  /** The image without tag or digest (`host/repo`), or the local path or URL installed from. */
  image: z.string().min(1),
  /** Digest the reference resolved to (index or manifest); absent for file: and http(s): sources. */
  digest: z.string().optional(),
  /** The platform manifest that was extracted, when the image is an index. */
  manifest: z.string().optional(),
  /** Who signed it, as verification reported; absent when nothing was verified. */
  signer: z.string().optional(),
  installedAt: z.string().min(1),
  kbundleVersion: z.string().min(1),
  /** Extensions: the .raw files this install put into the store. */
  files: z.array(z.string()).optional(),
  /** Constraints of the image the node did not meet, installed anyway with --ignore-requires. */
  ignoredRequires: z.array(z.string()).optional(),
});

export type InstallRecord = z.infer<typeof RecordSchema>;
export type NewInstallRecord = Omit<InstallRecord, 'version' | 'installedAt' | 'kbundleVersion'> & { installedAt?: string };

/**
 * The image name a record is keyed by: `host/repo` for a registry reference (tag and digest
 * dropped, Docker Hub normalised), else the reference as written (a local path or URL).
 */
export function imageIdentity(ref: string): string {
  try {
    const r = parseReference(ref, 'reference');
    return `${r.registry}/${r.repository}`;
  } catch {
    return ref;
  }
}

/** The key of a record: one per kind, scheme family and image. */
export function recordKey(kind: InstalledKind, scheme: string, image: string): string {
  // docker:// and container:// extract the same way onto the root: one record for both.
  const family = kind === 'bundle' ? (scheme === 'docker' ? 'container' : scheme) : kind;
  return kind === 'bundle' ? `${family}://${image}` : `${family}:${image}`;
}

/** A file name for a key: readable, only [A-Za-z0-9._-], never hidden, and unique through a hash. */
export function recordFileName(key: string): string {
  const readable = key
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/^[._-]+/, '')
    .slice(0, 96);
  const hash = createHash('sha256').update(key).digest('hex').slice(0, 16);
  return `${readable || 'record'}-${hash}.json`;
}

/**
 * The record directory under `root`. Written through `stateDir` (src/util/state-dir.ts: each
 * component created without following links, a symlink or non-folder refused), as the root's lock
 * and install journals are. Read-only callers (status, a preflight on a read-only root) walk the
 * same components without creating anything: undefined when the folder does not exist yet.
 */
async function recordDir(root: string, create: boolean): Promise<string | undefined> {
  if (create) return stateDir(resolve(root), RECORDS_DIR);
  let dir = resolve(root);
  for (const part of [...STATE_PATH, RECORDS_DIR]) {
    dir = join(dir, part);
    let st;
    try {
      st = await lstat(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new KbError('INVALID_INPUT', `${dir}: cannot read the install state (${errorMessage(e)})`, { cause: e });
    }
    if (st.isSymbolicLink() || !st.isDirectory()) {
      throw new KbError('REFUSED', `${dir} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a folder'}; kbundle keeps its state there and does not follow it`, {
        hint: `remove ${dir} (something other than kbundle put it there) and run again`,
      });
    }
  }
  return dir;
}

/** Check, before anything is installed, that a record can be written afterwards (creates nothing). */
export async function checkRecordDir(root: string): Promise<void> {
  await recordDir(root, false);
}

/**
 * Write (or replace) the record of one install. The only function that writes install state:
 * the state folder is checked component by component, the file staged and renamed into place.
 */
export async function writeInstallRecord(root: string, rec: NewInstallRecord): Promise<InstallRecord> {
  const record: InstallRecord = RecordSchema.parse({
    version: 1,
    ...rec,
    installedAt: rec.installedAt ?? new Date().toISOString(),
    kbundleVersion: VERSION,
  });
  const dir = (await recordDir(root, true))!;
  const name = recordFileName(recordKey(record.kind, record.scheme, record.image));
  await writeFileAtomic(join(dir, name), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o644 });
  return record;
}

export interface ReadRecords {
  records: InstallRecord[];
  /** Files that could not be read as records (named, with why), so status can say so. */
  problems: string[];
}

/** Every record under `root`, read-only (a missing folder means nothing was recorded). */
export async function readInstallRecords(root: string): Promise<ReadRecords> {
  const dir = await recordDir(root, false);
  const out: ReadRecords = { records: [], problems: [] };
  if (!dir) return out;
  for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    if (!e.name.endsWith('.json') || isStagingName(e.name)) continue;
    const path = join(dir, e.name);
    if (!e.isFile()) {
      out.problems.push(`${path}: not a regular file`);
      continue;
    }
    try {
      const st = await lstat(path);
      if (st.size > MAX_RECORD_BYTES) throw new Error(`larger than ${MAX_RECORD_BYTES} bytes`);
      const parsed = RecordSchema.safeParse(JSON.parse(await readFile(path, 'utf8')));
      if (!parsed.success) throw new Error(`${parsed.error.issues[0]!.path.join('.') || '(top level)'}: ${parsed.error.issues[0]!.message}`);
      out.records.push(parsed.data);
    } catch (err) {
      out.problems.push(`${path}: not an install record (${errorMessage(err)})`);
    }
  }
  return out;
}

/** The record of `image` installed as `kind`/`scheme`, if any. */
export function findRecord(records: InstallRecord[], kind: InstalledKind, scheme: string, image: string): InstallRecord | undefined {
  const key = recordKey(kind, scheme, image);
  return records.find((r) => recordKey(r.kind, r.scheme, r.image) === key);
}
