import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { errorMessage, KbError, UserError, writeError, type ErrorCode } from '../errors.js';
import { hostPlatform } from '../oci/platform.js';
import type { Descriptor, Platform } from '../oci/types.js';
import type { RegistryClient } from '../registry/client.js';
import { openSource } from '../store/open.js';
import { resolveAndRead, type Target } from '../oci/target.js';
import { localImageLocation, type ImageLocation } from '../store/transport.js';
import { parseBundleTarget, type BundleTarget } from './bundle-uri.js';
import { extractImage, resolveManifest, type ExtractOptions } from './extract-image.js';
import { ensureNodeFolders, prepareJail } from './confine.js';
import { nodeConfigWith } from './kairos-config.js';
import { runBundleScript } from './run-script.js';
import { withStagingDir } from '../util/atomic-write.js';
import { onInterrupt } from '../util/interrupt.js';
import { withRootLock, type LockOptions } from '../util/root-lock.js';
import { InstallJournal, recoverJournals } from './journal.js';
import { parseYamlText, YAML_CAPS } from '../util/yaml.js';
import { checkRecordDir, imageIdentity, writeInstallRecord } from '../state/records.js';
import { enforceRequires, imageRequires } from '../requires/requires.js';

/** Checks an image before anything is written; throws a UserError saying why it is refused. */
export type ImageVerifier = (target: Target, top: Descriptor, display: string) => Promise<string | void>;

export interface InstallOptions extends ExtractOptions {
  /** Where container:// bundles land and what run.sh sees as KBUNDLE_ROOT (default "/"). */
  root?: string;
  platform?: Platform;
  /** The target is a local archive or layout (Kairos `local_file: true`). */
  localFile?: boolean;
  client: RegistryClient;
  verify?: ImageVerifier;
  onOutput?: (chunk: string) => void;
  /** run.sh time limit (default 30 minutes). */
  scriptTimeoutMs?: number;
  /** Under --root: run run.sh on this host with KBUNDLE_ROOT set instead of confined to the root. */
  unconfinedScripts?: boolean;
  /** Under --root: the cloud-config given with --config, which the confined `kairos-agent config get` also reads. */
  cloudConfig?: string;
  /** Waiting for another install into the same root. */
  lock?: LockOptions;
  /** The node root whose install records (src/state) get this install (default: `root`). */
  stateRoot?: string;
  /** Install although the node does not meet the image's `requires:` (warned, and recorded). */
  ignoreRequires?: boolean;
  onWarning?: (message: string) => void;
}

export interface InstallResult {
  target: string;
  scheme: BundleTarget['scheme'];
  digest: string;
  manifest: string;
  files: number;
  verified?: string;
  output?: string;
}

/**
 * Install one bundle target with Kairos semantics (kairos-sdk bundles.go), verify-first:
 * resolve the reference once, check signatures on that digest, then extract; run:// bundles
 * are extracted to a temp dir, `/bin/sh run.sh` runs there, and the dir is removed after.
 */
export async function installBundle(raw: string, opts: InstallOptions): Promise<InstallResult> {
  const t = parseBundleTarget(raw);
  const root = resolve(opts.root ?? '/');
  const stateRoot = resolve(opts.stateRoot ?? root);
  await checkRecordDir(stateRoot); // refuse a planted symlink before anything is written
  const loc: ImageLocation = opts.localFile ? await localImageLocation(t.ref, raw) : { transport: 'docker', ref: t.ref };
  const opened = await openSource(loc, { client: opts.client });
  try {
    // Read-only until here: a refused image leaves the root exactly as it was.
    // One GET for the tag's manifest; verifying and picking the platform then read it from memory.
    const { desc: top } = await resolveAndRead(opened.target, opened.reference);
    const verified = opts.verify ? await opts.verify(opened.target, top, opened.display) : undefined;
    const manifest = await resolveManifest(opened.target, top.digest, opts.platform ?? hostPlatform());
    // The node (the state root) must meet the image's constraints before anything is written.
    const requires = await imageRequires(opened.target, top, manifest, `${opened.display}@${top.digest}`);
    const ignoredRequires = await enforceRequires(requires, stateRoot, raw, { ignore: opts.ignoreRequires, onWarning: opts.onWarning });
    const base: InstallResult = { target: raw, scheme: t.scheme, digest: top.digest, manifest: manifest.digest, files: 0, ...(verified ? { verified } : {}) };
    await mkdir(root, { recursive: true });
    return await withRootLock(root, `install ${raw}`, opts.lock ?? {}, async () => {
      // An install stopped part way (killed, power cut) is finished or undone before anything else.
      recoverJournals(root);
      const r = t.scheme === 'run' ? await runBundle(raw, t, root, opened.target, manifest, base, opts) : await extractBundle(raw, root, opened.target, manifest, base, opts);
      await writeInstallRecord(stateRoot, {
        kind: 'bundle',
        target: raw,
        scheme: t.scheme,
        image: opts.localFile ? resolve(t.ref) : imageIdentity(t.ref),
        digest: r.digest,
        manifest: r.manifest,
        ...(r.verified ? { signer: r.verified } : {}),
        ...(ignoredRequires.length ? { ignoredRequires } : {}),
      });
      return r;
    });
  } catch (e) {
    throw writeError(e, root);
  } finally {
    await opened.close();
  }
}

/** container:// (and docker://): all or nothing, staged beside the final paths and renamed into place when complete. */
async function extractBundle(raw: string, root: string, target: Target, manifest: Descriptor, base: InstallResult, opts: InstallOptions): Promise<InstallResult> {
  const journal = InstallJournal.begin(root, raw);
  const off = onInterrupt(() => journal.abortSync());
  try {
    const r = await extractImage(target, manifest, root, { ...opts, journal });
    journal.commitSync();
    await r.finish();
    return { ...base, files: r.files };
  } catch (e) {
    journal.abortSync();
    throw e;
  } finally {
    off();
  }
}

/** run://: the image is unpacked into a staging folder (swept if kbundle is killed) and run.sh runs there. */
async function runBundle(raw: string, t: BundleTarget, root: string, target: Target, manifest: Descriptor, base: InstallResult, opts: InstallOptions): Promise<InstallResult> {
  return withStagingDir(tmpdir(), 'run', async (staging) => {
    const confined = root !== '/' && !opts.unconfinedScripts;
    if (confined) await ensureNodeFolders(root);
    const jail = confined ? await prepareJail(staging, nodeConfigWith(root, opts.cloudConfig)) : undefined;
    const dir = jail ? jail.bundleDir : staging;
    const r = await extractImage(target, manifest, dir, opts);
    const run = await runBundleScript(dir, t.ref, {
      onOutput: opts.onOutput,
      timeoutMs: opts.scriptTimeoutMs,
      ...(jail ? { jail: { root, env: jail.env } } : { root }),
    });
    if (run.code !== 0) {
      throw new UserError(`${raw}: run.sh exited with status ${run.code}:\n${run.output.trimEnd()}`, 'nothing else was changed by kbundle; the script output above says why it failed');
    }
    return { ...base, files: r.files, output: run.output };
  });
}

// ---- cloud-config `bundles:` ----------------------------------------------------------------

const BundleEntrySchema = z
  .object({
    targets: z.array(z.string()).min(1),
    rootfs_path: z.string().optional(),
    db_path: z.string().optional(),
    repository: z.string().optional(),
    local_file: z.boolean().optional(),
    cosign: z.boolean().optional(),
    'cosign-key': z.string().optional(),
  })
  .passthrough();

const CloudConfigSchema = z
  .object({
    bundles: z.array(BundleEntrySchema).default([]),
    cosign: z.boolean().optional(),
    'cosign-key': z.string().optional(),
    fail_on_bundles_errors: z.boolean().optional(),
  })
  .passthrough();

export interface ConfigTarget {
  target: string;
  rootfsPath: string;
  localFile: boolean;
  cosign: boolean;
  cosignKey?: string;
}

/** The `bundles:` block of a Kairos cloud-config, flattened in order, with per-entry options. */
export function parseCloudConfigBundles(text: string, file: string): ConfigTarget[] {
  const { value } = parseYamlText(text, file, YAML_CAPS.cloudConfig);
  const r = CloudConfigSchema.safeParse(value ?? {});
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new UserError(`${file}: ${i.path.join('.') || '(top level)'}: ${i.message}`, 'bundles: is a list of entries, each with targets: [run://… | container://… | docker://…]');
  }
  const out: ConfigTarget[] = [];
  for (const entry of r.data.bundles) {
    for (const target of entry.targets) {
      const key = entry['cosign-key'] ?? r.data['cosign-key'];
      out.push({
        target,
        rootfsPath: entry.rootfs_path ?? '/',
        localFile: entry.local_file ?? false,
        cosign: entry.cosign ?? r.data.cosign ?? key !== undefined,
        ...(key ? { cosignKey: key } : {}),
      });
    }
  }
  return out;
}

export interface ConfigInstallOutcome {
  target: string;
  ok: boolean;
  result?: InstallResult;
  error?: string;
  /** The failure's code (INTERNAL for an unexpected error). */
  code?: ErrorCode;
}

/**
 * Install every target in order; one failure does not stop the others (as Kairos), but unlike
 * Kairos every failure is reported, not only the last.
 */
export async function installFromConfig(targets: ConfigTarget[], opts: InstallOptions, verifierFor: (t: ConfigTarget) => ImageVerifier | undefined): Promise<ConfigInstallOutcome[]> {
  const outcomes: ConfigInstallOutcome[] = [];
  for (const t of targets) {
    try {
      const root = join(resolve(opts.root ?? '/'), t.rootfsPath);
      const result = await installBundle(t.target, { ...opts, root, stateRoot: opts.stateRoot ?? opts.root, localFile: t.localFile, verify: verifierFor(t) ?? opts.verify });
      outcomes.push({ target: t.target, ok: true, result });
    } catch (e) {
      outcomes.push({ target: t.target, ok: false, error: errorMessage(e), code: e instanceof KbError ? e.code : 'INTERNAL' });
    }
  }
  return outcomes;
}
