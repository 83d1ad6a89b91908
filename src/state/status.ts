/**
 * `kbundle status`: what is installed under a node root — bundles from their install records,
 * extensions from kairos-agent's store (joined with their records for digest, signer and time) —
 * and the read-only check a rollout's preflight runs ("already at this digest?").
 *
 * Everything here only reads: a preflight runs with the host root mounted read-only.
 */
import { lstat, readdir } from 'node:fs/promises';
import { join, posix, resolve } from 'node:path';
import { KbError, UserError } from '../errors.js';
import { parseReference } from '../registry/reference.js';
import { BOOT_STATES, KINDS, type BootState, type ExtensionKind } from '../kairos/extensions.js';
import { findRecord, imageIdentity, readInstallRecords, type InstallRecord, type InstalledKind } from './records.js';

export interface InstalledExtension {
  kind: ExtensionKind;
  /** The file in the store, e.g. `tools.sysext.raw`. */
  name: string;
  enabled: BootState[];
  /** Linked into run/extensions (merged now, or at the next refresh). */
  running: boolean;
  /** The install that put it there, when kbundle installed it. */
  record?: InstallRecord;
}

export interface NodeStatus {
  root: string;
  bundles: InstallRecord[];
  extensions: InstalledExtension[];
  /** Records of extensions whose files are gone from the store (removed since). */
  removedExtensions: InstallRecord[];
  /** Unreadable record files, named. */
  problems: string[];
}

async function entryType(path: string): Promise<'dir' | 'other' | undefined> {
  try {
    return (await lstat(path)).isDirectory() ? 'dir' : 'other';
  } catch {
    return undefined;
  }
}

/** `.raw` names in a folder that are not directories (symlinks count), without creating it. */
async function rawNames(dir: string): Promise<string[]> {
  if ((await entryType(dir)) !== 'dir') return [];
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) if (!e.isDirectory() && posix.extname(e.name) === '.raw') out.push(e.name);
  return out.sort();
}

async function extensionsOf(root: string, kind: ExtensionKind, records: InstallRecord[]): Promise<InstalledExtension[]> {
  const k = KINDS[kind];
  const store = join(root, k.storeDir);
  const out: InstalledExtension[] = [];
  // The newest record that installed a file describes it.
  const byTime = records.filter((r) => r.kind === kind).sort((a, b) => b.installedAt.localeCompare(a.installedAt));
  for (const name of await rawNames(store)) {
    const enabled: BootState[] = [];
    for (const s of BOOT_STATES) if ((await entryType(join(store, s, name))) !== undefined) enabled.push(s);
    const running = (await entryType(join(root, k.runDir, name))) !== undefined;
    const record = byTime.find((r) => r.files?.includes(name));
    out.push({ kind, name, enabled, running, ...(record ? { record } : {}) });
  }
  return out;
}

export async function nodeStatus(rootArg: string): Promise<NodeStatus> {
  const root = resolve(rootArg);
  if ((await entryType(root)) !== 'dir') throw new KbError('NOT_FOUND', `--root ${rootArg}: not a directory`);
  const { records, problems } = await readInstallRecords(root);
  const extensions = [...(await extensionsOf(root, 'sysext', records)), ...(await extensionsOf(root, 'confext', records))];
  const present = new Set(extensions.map((e) => `${e.kind}/${e.name}`));
  return {
    root,
    bundles: records.filter((r) => r.kind === 'bundle').sort((a, b) => a.image.localeCompare(b.image)),
    extensions,
    removedExtensions: records.filter((r) => r.kind !== 'bundle' && !(r.files ?? []).some((f) => present.has(`${r.kind}/${f}`))),
    problems,
  };
}

/** What a preflight asks for: this image at this digest, installed this way. */
export interface WantedInstall {
  kind: InstalledKind;
  scheme: string;
  image: string;
  digest: string;
  target: string;
}

/**
 * Parse a `--check` target: a bundle target (`run://host/repo@sha256:…`) or, for extensions, an
 * install URI (`oci:host/repo@sha256:…`). It must be digest-pinned: "already installed" is about
 * a digest, never a tag.
 */
export function parseWanted(target: string, kind: InstalledKind): WantedInstall {
  const m = kind === 'bundle' ? /^(run|container|docker):\/\/(.+)$/.exec(target) : /^(oci|docker|container):(?:\/\/)?(.+)$/.exec(target);
  if (!m) {
    throw new UserError(
      `--check: "${target}" is not a ${kind === 'bundle' ? 'bundle target' : `${kind} install URI`}`,
      kind === 'bundle' ? 'write run://<registry>/<repo>@sha256:<digest> or container://…' : 'write oci:<registry>/<repo>@sha256:<digest>',
    );
  }
  const ref = parseReference(m[2]!, '--check');
  if (!ref.digest) throw new UserError(`--check: "${target}" is not pinned to a digest`, 'a check compares digests: write …@sha256:<digest> (kbundle rollout does)');
  return { kind, scheme: m[1]!, image: imageIdentity(m[2]!), digest: ref.digest, target };
}

/** Why the wanted install is already done on this node, or undefined when it is not. */
export function alreadyInstalled(status: NodeStatus, wanted: WantedInstall): string | undefined {
  const all = [...status.bundles, ...status.extensions.flatMap((e) => (e.record ? [e.record] : [])), ...status.removedExtensions];
  const rec = findRecord(all, wanted.kind, wanted.scheme, wanted.image);
  if (!rec || rec.digest !== wanted.digest) return undefined;
  if (wanted.kind !== 'bundle') {
    // The record alone is not enough: the .raw files must still be in the store.
    const names = new Set(status.extensions.filter((e) => e.kind === wanted.kind).map((e) => e.name));
    if (!(rec.files ?? []).every((f) => names.has(f))) return undefined;
  }
  return `already installed: ${wanted.image}@${wanted.digest} (${rec.kind === 'bundle' ? `${rec.scheme}://` : rec.kind}, since ${rec.installedAt})`;
}

/** Human lines for `kbundle status`. */
export function describeStatus(s: NodeStatus): string {
  const lines: string[] = [];
  const who = (r: InstallRecord) => `${r.digest ?? '(no digest)'}  ${r.signer ? `signed by ${r.signer}` : 'not verified'}  ${r.installedAt}`;
  lines.push(s.bundles.length ? 'bundles:' : 'bundles: none recorded');
  for (const r of s.bundles) lines.push(`  ${r.scheme}://${r.image}  ${who(r)}`);
  lines.push(s.extensions.length ? 'extensions:' : 'extensions: none');
  for (const e of s.extensions) {
    const where = [e.enabled.length ? `enabled: ${e.enabled.join(', ')}` : 'not enabled', e.running ? `in /${KINDS[e.kind].runDir}` : ''].filter(Boolean).join(', ');
    lines.push(`  ${e.name}  (${where})  ${e.record ? `${e.record.image}  ${who(e.record)}` : 'not installed by kbundle'}`);
  }
  for (const r of s.removedExtensions) lines.push(`  (removed) ${r.files?.join(', ')} from ${r.image}`);
  for (const p of s.problems) lines.push(`! ${p}`);
  return lines.join('\n');
}

export function statusJson(s: NodeStatus): unknown {
  return {
    root: s.root,
    bundles: s.bundles,
    extensions: s.extensions.map((e) => ({ kind: e.kind, name: e.name, enabled: e.enabled, running: e.running, record: e.record ?? null })),
    removedExtensions: s.removedExtensions,
    problems: s.problems,
  };
}
