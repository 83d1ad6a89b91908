import { spawnSync } from 'node:child_process';
import { resolveInRoot } from '../extract/secure-path.js';
import { copyFile, lstat, mkdir, readdir, readlink, rename, rm, stat, symlink, chmod, unlink } from 'node:fs/promises';
import { commitFile, withStagingDir } from '../util/atomic-write.js';
import { basename, join, posix, resolve } from 'node:path';
import { KbError, UserError, writeError } from '../errors.js';
import { downloadToFile } from '../registry/download.js';
import { withRootLock } from '../util/root-lock.js';
import { resolveManifest, extractImage } from '../extract/extract-image.js';
import { parsePlatform } from '../oci/platform.js';
import { RegistryClient, type RegistryClientOptions } from '../registry/client.js';
import { openSource } from '../store/open.js';
import { nodeImageLocation } from '../store/transport.js';
import { checkImage, detectSystemdVersion, readOsRelease, readOsReleaseFile, type CheckResult } from './check.js';
import type { ImageVerifier } from '../extract/install.js';
import { withCheckTrust } from './node-trust.js';
import { hostSystemdArch, KINDS, BOOT_STATES, systemdArch, type BootState, type ExtensionKind } from '../kairos/extensions.js';
import { pathExists } from '../fs-util.js';
import { checkRecordDir, imageIdentity, writeInstallRecord } from '../state/records.js';
import { enforceRequires, imageRequires } from '../requires/requires.js';

/**
 * kairos-agent's extension layout (pkg/action/sysext.go), under a root:
 *   var/lib/kairos/extensions/NAME.raw                       installed images (confext: confexts/)
 *   var/lib/kairos/extensions/<state>/NAME.raw → /var/lib/kairos/extensions/NAME.raw   enablement
 *   run/extensions/NAME.raw → /var/lib/kairos/extensions/<state>/NAME.raw              `--now`
 * Link targets are absolute node paths (as kairos-agent writes them), so a tree prepared under
 * `--root` is exactly what the node will see. kairos-agent's side effects are kept on purpose
 * (listing creates the listed folder; remove visits every boot-state folder), so the trees match.
 */
/** One change to a node's extensions at a time, serialised with installs (the root's lock). */
async function locked<T>(node: Node, what: string, fn: () => Promise<T>): Promise<T> {
  try {
    await mkdir(node.root, { recursive: true });
    return await withRootLock(node.root, `sysext ${what}`, {}, fn);
  } catch (e) {
    throw writeError(e, node.root);
  }
}

export interface Node {
  root: string;
  kind: ExtensionKind;
}

export function nodePaths(node: Node) {
  const k = KINDS[node.kind];
  // Inside the root as the node would resolve it: a symlink planted at var/lib/extensions (or any
  // folder on the way) is followed as if the root were `/`, never out of it (securejoin).
  const abs = (rel: string) => resolveInRoot(node.root, rel.split('/'), true);
  return {
    store: abs(k.storeDir),
    /** The absolute path as the node sees it (symlink targets). */
    storeOnNode: `/${k.storeDir}`,
    state: (s: BootState) => abs(posix.join(k.storeDir, s)),
    stateOnNode: (s: BootState) => `/${posix.join(k.storeDir, s)}`,
    run: abs(k.runDir),
    bootMarker: (s: BootState) => abs(`run/cos/${s}_mode`),
  };
}

/** `.raw` entries of a folder that are not directories (symlinks count), sorted; creates the folder like kairos-agent. */
export async function listDir(dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory()) continue;
    if (posix.extname(e.name) === '.raw') out.push(e.name);
  }
  return out.sort();
}

export interface ListedExtension {
  name: string;
  /** Boot states it is enabled in. */
  enabled: BootState[];
  /** Linked into run/extensions (merged now, or at the next refresh). */
  running: boolean;
}

export async function listExtensions(node: Node, state?: BootState): Promise<ListedExtension[]> {
  const p = nodePaths(node);
  const names = await listDir(state ? p.state(state) : p.store);
  const out: ListedExtension[] = [];
  for (const name of names) {
    const enabled: BootState[] = [];
    for (const s of BOOT_STATES) if (await pathExists(join(p.state(s), name))) enabled.push(s);
    out.push({ name, enabled, running: await pathExists(join(p.run, name)) });
  }
  return out;
}

/**
 * Find one installed extension by what the user typed. kairos-agent treats the argument as a
 * regular expression and takes the first match; kbundle takes an exact name (`foo.sysext.raw`,
 * `foo.sysext`, `foo`) first, then the regular expression, and refuses when it matches several.
 */
export function pickExtension(names: string[], query: string, kind: ExtensionKind, where: string): string | undefined {
  const suffix = KINDS[kind].suffix;
  const exact = names.filter((n) => n === query || n === `${query}.raw` || n === `${query}${suffix}`);
  if (exact.length === 1) return exact[0];
  let re: RegExp | undefined;
  try {
    re = new RegExp(query);
  } catch {
    re = undefined;
  }
  const matches = names.filter((n) => (re ? re.test(n) : n.includes(query)));
  if (matches.length > 1) {
    throw new UserError(`${where}: "${query}" matches ${matches.length} extensions: ${matches.join(', ')}`, 'give the full file name (kairos-agent would silently take the first one)');
  }
  return matches[0];
}

async function resolveInstalled(node: Node, query: string): Promise<string> {
  const p = nodePaths(node);
  const names = await listDir(p.store);
  const found = pickExtension(names, query, node.kind, node.kind);
  if (!found)
    throw new UserError(`${node.kind} "${query}" is not installed in ${p.store}`, names.length ? `installed: ${names.join(', ')}` : `nothing is installed; use kbundle ${node.kind} install <uri>`);
  return found;
}

export interface ActionResult {
  name: string;
  changed: boolean;
  messages: string[];
}

/** Restart the unit on a live node (never under --root: that node is not running here). */
function restartUnit(node: Node, messages: string[]): void {
  if (resolve(node.root) !== '/') {
    messages.push(`not restarting ${KINDS[node.kind].unit}: --root ${node.root} is not the running system`);
    return;
  }
  const unit = KINDS[node.kind].unit;
  const r = spawnSync('systemctl', ['restart', unit], { encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new UserError(`systemctl restart ${unit} failed: ${(r.stderr || String(r.error ?? '')).trim()}`);
  messages.push(`restarted ${unit}`);
}

async function isLink(p: string): Promise<boolean> {
  try {
    return (await lstat(p)).isSymbolicLink();
  } catch {
    return false;
  }
}

export function enableExtension(node: Node, query: string, state: BootState, now: boolean): Promise<ActionResult> {
  return locked(node, `enable ${query}`, () => enableExtensionLocked(node, query, state, now));
}

async function enableExtensionLocked(node: Node, query: string, state: BootState, now: boolean): Promise<ActionResult> {
  const p = nodePaths(node);
  const name = await resolveInstalled(node, query);
  const dir = p.state(state);
  await mkdir(dir, { recursive: true });
  const messages: string[] = [];
  const link = join(dir, name);
  const target = posix.join(p.storeOnNode, name);
  let changed = false;
  if (await isLink(link)) {
    if ((await readlink(link)) !== target) {
      await unlink(link);
      await symlink(target, link);
      changed = true;
    }
    messages.push(`${name} is already enabled in ${state}`);
  } else {
    if (await pathExists(link)) throw new UserError(`${link} exists and is not a symlink`, 'remove it by hand; kbundle only manages links there');
    await symlink(target, link);
    changed = true;
    messages.push(`${name} enabled in ${state}`);
  }
  if (now) {
    if (state === 'common' || (await pathExists(p.bootMarker(state)))) {
      await mkdir(p.run, { recursive: true });
      const runLink = join(p.run, name);
      const runTarget = posix.join(p.stateOnNode(state), name);
      if (!(await isLink(runLink)) || (await readlink(runLink)) !== runTarget) {
        await rm(runLink, { force: true });
        await symlink(runTarget, runLink);
        changed = true;
      }
      messages.push(`${name} linked into /${KINDS[node.kind].runDir}`);
      restartUnit(node, messages);
    } else {
      messages.push(`${name} enabled in ${state} but not merged now: the node is not booted in ${state} (no /run/cos/${state}_mode)`);
    }
  }
  return { name, changed, messages };
}

export function disableExtension(node: Node, query: string, state: BootState, now: boolean): Promise<ActionResult> {
  return locked(node, `disable ${query}`, () => disableExtensionLocked(node, query, state, now));
}

async function disableExtensionLocked(node: Node, query: string, state: BootState, now: boolean): Promise<ActionResult> {
  const p = nodePaths(node);
  const dir = p.state(state);
  const messages: string[] = [];
  const names = (await pathExists(dir)) ? await listDir(dir) : [];
  const name = pickExtension(names, query, node.kind, `disable --${state}`);
  if (!name) return { name: query, changed: false, messages: [`${query} is not enabled in ${state}`] };
  await rm(join(dir, name), { force: true });
  messages.push(`${name} disabled in ${state}`);
  if (now) {
    if (state === 'common' || (await pathExists(p.bootMarker(state)))) {
      const runLink = join(p.run, name);
      if (await isLink(runLink)) {
        await unlink(runLink);
        messages.push(`${name} removed from /${KINDS[node.kind].runDir}`);
        restartUnit(node, messages);
      } else messages.push(`${name} was not in /${KINDS[node.kind].runDir}; nothing to refresh`);
    } else messages.push(`not refreshed now: the node is not booted in ${state}`);
  }
  return { name, changed: true, messages };
}

export function removeExtension(node: Node, query: string, now: boolean): Promise<ActionResult> {
  return locked(node, `remove ${query}`, () => removeExtensionLocked(node, query, now));
}

async function removeExtensionLocked(node: Node, query: string, now: boolean): Promise<ActionResult> {
  const p = nodePaths(node);
  const name = await resolveInstalled(node, query);
  const messages: string[] = [];
  for (const s of BOOT_STATES) {
    const names = await listDir(p.state(s)); // kairos-agent lists (and so creates) every state folder
    if (names.includes(name)) {
      await rm(join(p.state(s), name), { force: true });
      messages.push(`${name} disabled in ${s}`);
    }
  }
  await rm(join(p.store, name), { recursive: true, force: true });
  messages.push(`${name} removed`);
  if (now) {
    const runLink = join(p.run, name);
    if (await isLink(runLink)) {
      await unlink(runLink);
      messages.push(`${name} removed from /${KINDS[node.kind].runDir}`);
      restartUnit(node, messages);
    }
  }
  return { name, changed: true, messages };
}

// ---------------------------------------------------------------------------------------------
// install
// ---------------------------------------------------------------------------------------------

export interface InstallOptions {
  /** Check each image against the node before it lands (default true). */
  check?: boolean;
  policy?: string;
  certs?: string[];
  /** The hierarchies the node merges (default: its systemd-sysext drop-in's, else Kairos's). */
  hierarchies?: string[];
  osReleaseFile?: string;
  systemdVersion?: number;
  arch?: string;
  platform?: string;
  registry?: RegistryClientOptions;
  /**
   * Signature check of an OCI image source (cosign key or trust policy), run on the digest the
   * reference resolved to before anything is extracted; file: and http(s): sources have none.
   */
  verify?: ImageVerifier;
  /** Install an OCI image although the node does not meet its `requires:` (warned, recorded). */
  ignoreRequires?: boolean;
  onWarning?: (message: string) => void;
}

export interface InstallResult {
  installed: string[];
  checks: CheckResult[];
  source: string;
  /** The image digest installed from (OCI sources). */
  digest?: string;
  /** Who signed it, when `verify` was given. */
  verified?: string;
}

/** kairos-agent's file name for a URL: the last path component, query and fragment dropped. */
export function fileNameFromUri(uri: string): string {
  const noQuery = uri.replace(/[?#].*$/, '');
  return basename(noQuery.replace(/\/+$/, ''));
}

type Source = { kind: 'file'; path: string } | { kind: 'http'; url: string } | { kind: 'image'; ref: string; scheme: string };

export function parseInstallUri(uri: string): Source {
  const m = /^([a-z][a-z0-9+.-]*):(.*)$/.exec(uri);
  if (!m) throw new UserError(`"${uri}" has no scheme`, 'use file:/path/foo.sysext.raw, https://…/foo.sysext.raw, oci:<registry>/<repo>:<tag> (or docker:/container:)');
  const scheme = m[1]!;
  let rest = m[2]!;
  if (scheme === 'file') {
    if (rest.startsWith('//')) rest = rest.slice(2);
    if (!rest) throw new UserError(`"${uri}": no path`);
    return { kind: 'file', path: decodeURIComponent(rest) };
  }
  if (scheme === 'http' || scheme === 'https') return { kind: 'http', url: uri };
  if (['oci', 'docker', 'container', 'oci-archive', 'docker-archive'].includes(scheme)) {
    if (rest.startsWith('//')) rest = rest.slice(2);
    if (!rest) throw new UserError(`"${uri}": no image reference`);
    return { kind: 'image', ref: rest, scheme };
  }
  throw new KbError('UNSUPPORTED', `"${uri}": unsupported scheme "${scheme}:"`, { hint: 'kairos-agent accepts oci:, docker:, container:, file:, http: and https:' });
}

async function stageFile(src: Source & { kind: 'file' }, staging: string): Promise<string[]> {
  const name = basename(src.path);
  let st;
  try {
    st = await stat(src.path);
  } catch {
    throw new KbError('NOT_FOUND', `file:${src.path}: no such file`);
  }
  if (!st.isFile()) throw new UserError(`file:${src.path}: not a regular file`);
  await copyFile(src.path, join(staging, name));
  await chmod(join(staging, name), st.mode & 0o7777); // kairos-agent keeps the mode
  return [name];
}

async function stageHttp(src: Source & { kind: 'http' }, staging: string): Promise<string[]> {
  const name = fileNameFromUri(src.url);
  // Into the staging folder; installExtension checks it before anything is renamed into the store.
  await downloadToFile({ url: src.url, dest: join(staging, name), what: src.url, mode: 0o644 });
  return [name];
}

interface Staged {
  names: string[];
  digest?: string;
  verified?: string;
  ignoredRequires?: string[];
}

async function stageImage(src: Source & { kind: 'image' }, staging: string, opts: InstallOptions, nodeRoot: string): Promise<Staged> {
  const client = new RegistryClient(opts.registry ?? {});
  try {
    // kbundle spells OCI layouts oci:<dir>[:tag]; kairos-agent's oci:/docker:/container: are registry
    // references. A local directory holding an oci-layout file wins, anything else is a registry ref.
    const loc = await nodeImageLocation(src.scheme, src.ref, 'install');
    const opened = await openSource(loc, { client });
    try {
      const platform = opts.platform ? parsePlatform(opts.platform, '--platform') : undefined;
      // Verify-first: the signature is checked on the digest the reference resolved to, and
      // everything after reads that digest, not the (movable) tag.
      const top = await opened.target.resolve(opened.reference);
      const verified = opts.verify ? ((await opts.verify(opened.target, top, opened.display)) ?? undefined) : undefined;
      const manifest = await resolveManifest(opened.target, top.digest, platform);
      const requires = await imageRequires(opened.target, top, manifest, `${opened.display}@${top.digest}`);
      const ignoredRequires = await enforceRequires(requires, nodeRoot, opened.display, { ignore: opts.ignoreRequires, onWarning: opts.onWarning });
      const root = join(staging, 'image');
      await extractImage(opened.target, manifest, root, { stagingDir: staging });
      const names: string[] = [];
      for (const e of await readdir(root, { withFileTypes: true })) {
        if (e.isFile() && e.name.endsWith('.raw')) {
          await rename(join(root, e.name), join(staging, e.name));
          names.push(e.name);
        }
      }
      if (names.length === 0) {
        throw new UserError(`${opened.display}: the image holds no .raw file at its root`, 'an extension image carries NAME.sysext.raw at /; build one with kbundle sysext build --image');
      }
      return { names: names.sort(), digest: top.digest, ...(verified ? { verified } : {}), ...(ignoredRequires.length ? { ignoredRequires } : {}) };
    } finally {
      await opened.close();
    }
  } finally {
    await client.close();
  }
}

/**
 * Install from a URI into the node's store, like kairos-agent `sysext install`, but each image is
 * checked against the node's os-release, systemd and image policy first (unless `check: false`),
 * and lands atomically (temp file in the store, then rename): a refused image leaves nothing.
 */
export function installExtension(node: Node, uri: string, opts: InstallOptions = {}): Promise<InstallResult> {
  return locked(node, `install ${uri}`, () => installExtensionLocked(node, uri, opts));
}

async function installExtensionLocked(node: Node, uri: string, opts: InstallOptions = {}): Promise<InstallResult> {
  const src = parseInstallUri(uri);
  const p = nodePaths(node);
  await checkRecordDir(node.root); // refuse a planted symlink before anything is written
  // The staging folder sits in the store (the final rename stays on one file system); a store
  // folder made for an install that is then refused goes again, so a refusal leaves no trace.
  const madeStore = await mkdir(p.store, { recursive: true });
  try {
    return await stageAndInstall(node, uri, src, p, opts);
  } catch (e) {
    if (madeStore) await rm(madeStore, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
}

async function stageAndInstall(node: Node, uri: string, src: Source, p: ReturnType<typeof nodePaths>, opts: InstallOptions): Promise<InstallResult> {
  return withStagingDir(p.store, 'install', async (staging) => {
    if (opts.verify && src.kind !== 'image') {
      throw new UserError(
        `${uri}: --key/--policy verify signatures of OCI images; a ${src.kind === 'file' ? 'file:' : 'http(s):'} source has none`,
        "the image's own dm-verity signature is checked against --cert and the node's certificates instead; drop --key/--policy",
      );
    }
    const staged: Staged =
      src.kind === 'file' ? { names: await stageFile(src, staging) } : src.kind === 'http' ? { names: await stageHttp(src, staging) } : await stageImage(src, staging, opts, node.root);
    const names = staged.names;
    for (const n of names) {
      if (!n.endsWith('.raw') || n.startsWith('.')) throw new UserError(`${uri}: "${n}" is not a .raw file`, 'kairos-agent and systemd only use *.raw images; nothing was installed');
    }
    const checks: CheckResult[] = [];
    if (opts.check !== false) {
      const fields = opts.osReleaseFile ? await readOsReleaseFile(opts.osReleaseFile) : (await readOsRelease(node.root)).fields;
      const version = opts.systemdVersion ?? (await detectSystemdVersion(node.root));
      // The node's own policy (Trusted Boot or not) and the certificates it trusts, unless given.
      await withCheckTrust(node.root, { policy: opts.policy, certs: opts.certs, hierarchies: opts.hierarchies, kind: node.kind }, async ({ policy, certs, trustedBoot, hierarchies }) => {
        const why = trustedBoot ? ' (a Trusted Boot node: only signed images by an enrolled certificate merge)' : '';
        for (const n of names) {
          const r = await checkImage(join(staging, n), {
            kind: node.kind,
            osRelease: fields,
            policy,
            certs,
            systemdVersion: version,
            arch: opts.arch ? systemdArch(opts.arch) : hostSystemdArch(),
            fileName: n,
            hierarchies,
            // Errors name the image as the user gave it, not its staged copy.
            what: names.length === 1 ? uri : `${uri}: ${n}`,
          });
          checks.push(r);
          if (!r.ok) {
            throw new KbError('REFUSED', `${n} would not be merged on this node${why}, so it was not installed:\n  - ${r.reasons.join('\n  - ')}`, {
              hint: 'fix the image, or pass --image-policy/--cert/--os-release to describe the node, or --no-check to install anyway (as kairos-agent does)',
            });
          }
        }
      });
    }
    for (const n of names) await commitFile(join(staging, n), join(p.store, n));
    await writeInstallRecord(node.root, {
      kind: node.kind,
      target: uri,
      scheme: src.kind === 'image' ? src.scheme : src.kind === 'file' ? 'file' : new URL(src.url).protocol.slice(0, -1),
      image: src.kind === 'image' ? imageIdentity(src.ref) : src.kind === 'file' ? resolve(src.path) : src.url,
      files: names,
      ...(staged.digest ? { digest: staged.digest } : {}),
      ...(staged.verified ? { signer: staged.verified } : {}),
      ...(staged.ignoredRequires ? { ignoredRequires: staged.ignoredRequires } : {}),
    });
    return { installed: names, checks, source: uri, ...(staged.digest ? { digest: staged.digest } : {}), ...(staged.verified ? { verified: staged.verified } : {}) };
  });
}

export function parseBootState(o: Partial<Record<BootState, boolean>>, required: boolean, cmd: string): BootState | undefined {
  const set = BOOT_STATES.filter((s) => o[s]);
  if (set.length > 1) throw new UserError(`${cmd}: only one of --active, --passive, --recovery or --common can be set`);
  if (required && set.length === 0) throw new UserError(`${cmd}: either --active, --passive, --recovery or --common must be set`);
  return set[0];
}
