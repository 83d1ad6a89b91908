import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { inspectImage, type ImageInfo } from './inspect.js';
import { formatFlags, parseImagePolicy, policyFor, KAIROS_POLICY, type ImagePolicy, type PolicyFlag } from './policy.js';
import { imageNameFromFile, matchExtensionRelease, MODERN_NAMES_SINCE, parseReleaseFile, type ReleaseFields } from './release.js';
import { verifySignature } from './sign.js';
import { hostSystemdArch, KINDS, type ExtensionKind } from './types.js';

export interface CheckOptions {
  kind?: ExtensionKind;
  /** The node's os-release fields. */
  osRelease: ReleaseFields;
  policy?: string;
  /** Certificates the node trusts for signed verity (/run/verity.d, or the firmware db under Trusted Boot). */
  certs?: string[];
  /** systemd version on the node; decides how the image name is derived. */
  systemdVersion?: number;
  /** The node's architecture (systemd name). */
  arch?: string;
  /** `system` (booted) or `initrd`. */
  scope?: string;
  /** The file name the image will have on the node (default: its current name). */
  fileName?: string;
}

export interface CheckLine {
  ok: boolean;
  text: string;
}

export interface CheckResult {
  ok: boolean;
  info: ImageInfo;
  imageName: string;
  protection?: PolicyFlag;
  lines: CheckLine[];
  /** The failed lines' texts. */
  reasons: string[];
}

/** Default systemd version assumed for a node when none is known: what current Kairos releases ship. */
export const DEFAULT_NODE_SYSTEMD = MODERN_NAMES_SINCE;

export function describeVersionRule(v: number): string {
  return v >= MODERN_NAMES_SINCE ? `systemd ${v} (image name = file name without .sysext.raw/.raw, cut at "_"/"+")` : `systemd ${v} (image name = file name without .raw)`;
}

/**
 * Would systemd-sysext on this node merge the image? Applies, in systemd's order: the image policy
 * to the partitions (verity, signature against the trusted certificates, or a bare unprotected
 * file system), the forbidden /usr/lib/os-release, the extension-release file named after the
 * image, and extension_release_validate() against the node's os-release.
 */
export async function checkImage(path: string, opts: CheckOptions): Promise<CheckResult> {
  const kind = opts.kind ?? 'sysext';
  const k = KINDS[kind];
  const info = await inspectImage(path, kind);
  const policy: ImagePolicy = parseImagePolicy(opts.policy ?? KAIROS_POLICY);
  const version = opts.systemdVersion ?? DEFAULT_NODE_SYSTEMD;
  const fileName = opts.fileName ?? info.fileName;
  const lines: CheckLine[] = [];
  const add = (ok: boolean, text: string) => lines.push({ ok, text });

  if (!fileName.endsWith('.raw')) add(false, `${fileName}: only *.raw files are extension images (kairos-agent and systemd ignore anything else)`);

  // --- partitions and protection -----------------------------------------------------------
  const achievable = new Set<PolicyFlag>();
  let protection: PolicyFlag | undefined;
  if (info.format === 'plain') {
    achievable.add('unprotected');
    add(true, `bare ${info.fsType} file system: systemd treats it as an unprotected root partition`);
  } else {
    add(true, `GPT disk image: ${info.partitions.map((p) => p.dps?.name ?? p.typeUuid).join(', ')}`);
    if (info.partitionArch && opts.arch && info.partitionArch !== opts.arch) {
      add(false, `the ${info.designator} partition is for ${info.partitionArch}, the node is ${opts.arch}: systemd only looks for partitions of the native architecture`);
    }
    if (info.verity) {
      const v = info.verity;
      const computed = v.check.rootHash.toString('hex');
      if (!v.check.treeMatches) add(false, `verity: the hash tree in ${v.partition.dps!.name} does not match the data (reads would fail)`);
      else if (computed !== v.uuidRootHash) add(false, `verity: partition UUIDs announce root hash ${v.uuidRootHash}, the data hashes to ${computed}`);
      else {
        achievable.add('verity');
        add(true, `verity: hash tree verified, root hash ${computed}`);
      }
      if (info.signature) {
        const s = info.signature;
        if (!s.json) add(false, `verity signature: ${s.error}`);
        else if (s.json.rootHash !== computed) add(false, `verity signature: signs root hash ${s.json.rootHash}, the data hashes to ${computed}`);
        else {
          const wantsSigned = policyFor(policy, info.designator).has('signed');
          const certs = opts.certs ?? [];
          if (certs.length === 0) {
            if (wantsSigned) add(!policyFor(policy, info.designator).has('verity') ? false : true, `verity signature: present, but no trusted certificate given to check it (--cert)`);
            else add(true, `verity signature: present (policy does not ask for signed images)`);
          } else {
            const verdict = await verifySignature(s.json, certs);
            if (verdict.signer) {
              achievable.add('signed');
              add(true, `verity signature: valid, signed by ${verdict.signer}`);
            } else add(!wantsSigned || policyFor(policy, info.designator).has('verity'), `verity signature: ${verdict.notes.join('; ')}`);
          }
        }
      } else if (policyFor(policy, info.designator).has('signed') && !policyFor(policy, info.designator).has('verity')) {
        add(false, `no ${info.designator}-verity-sig partition: the image is not signed`);
      }
    } else {
      achievable.add('unprotected');
      add(true, `no verity partition: the ${info.designator} partition is unprotected`);
    }
  }
  // The image policy, partition by partition (root and usr; an absent one must be allowed absent).
  for (const d of ['root', 'usr'] as const) {
    const flags = policyFor(policy, d);
    const present = info.designator === d || info.otherData.some((p) => p.dps?.designator === d);
    if (!present) {
      if (!flags.has('absent')) add(false, `image policy ${policy.text}: ${d}=${formatFlags(flags)} requires a ${d} partition, the image has none`);
      continue;
    }
    if (d !== info.designator) continue;
    const pick = (['signed', 'verity', 'unprotected'] as PolicyFlag[]).find((f) => flags.has(f) && achievable.has(f));
    if (pick) {
      protection = pick;
      add(true, `image policy ${policy.text}: ${d} used as ${pick}`);
    } else {
      const have = [...achievable].join('/') || 'nothing usable';
      add(false, `image policy ${policy.text}: ${d}=${formatFlags(flags)}, but this image offers ${have}${achievable.has('unprotected') && !achievable.has('verity') ? ' (a plain file system without dm-verity)' : ''}`);
    }
  }

  // --- content -------------------------------------------------------------------------------
  const merged = info.topLevel.filter((t) => k.hierarchies.includes(t));
  if (merged.length === 0) add(false, `the image has no ${k.hierarchies.map((h) => `/${h}`).join(' or ')}: nothing to merge`);
  const ignored = info.topLevel.filter((t) => !k.hierarchies.includes(t));
  if (ignored.length) info.warnings.push(`ignored by systemd-${kind} (not merged): ${ignored.map((t) => `/${t}`).join(', ')}`);
  if (kind === 'sysext' && info.hasOsRelease) add(false, `the image contains /usr/lib/os-release, which systemd refuses (on 252 this aborts the whole merge, not just this image)`);

  const imageName = imageNameFromFile(fileName, version);
  const release = info.releaseFiles.get(imageName);
  if (!release) {
    const have = [...info.releaseFiles.keys()].map((n) => `extension-release.${n}`);
    add(false, `${describeVersionRule(version)} looks for ${k.releaseDir}/extension-release.${imageName}; the image has ${have.length ? have.join(', ') : 'no extension-release file'}`);
  } else {
    add(true, `${k.releaseDir}/extension-release.${imageName} found`);
    const m = matchExtensionRelease(imageName, kind, { fields: opts.osRelease, architecture: opts.arch ?? hostSystemdArch(), scope: opts.scope ?? 'system', systemdVersion: version }, release);
    add(m.ok, `compatibility: ${m.reason}`);
  }
  const reasons = lines.filter((l) => !l.ok).map((l) => l.text);
  return { ok: reasons.length === 0, info, imageName, protection, lines, reasons };
}

/** The node's os-release under a root: etc/os-release, then usr/lib/os-release (os-release(5)). */
export async function readOsRelease(root: string): Promise<{ path: string; fields: ReleaseFields }> {
  for (const p of ['etc/os-release', 'usr/lib/os-release']) {
    try {
      return { path: join(root, p), fields: parseReleaseFile(await readFile(join(root, p), 'utf8')) };
    } catch {
      /* next */
    }
  }
  throw new UserError(`${root}: no etc/os-release or usr/lib/os-release`, 'point --root at a node root file system, pass --os-release, or install with --no-check');
}

export async function readOsReleaseFile(path: string): Promise<ReleaseFields> {
  try {
    return parseReleaseFile(await readFile(path, 'utf8'));
  } catch {
    throw new UserError(`--os-release: cannot read ${path}`);
  }
}

/** systemd's version on a root, from its libsystemd-shared-NNN.so; undefined when not found. */
export async function detectSystemdVersion(root: string): Promise<number | undefined> {
  for (const dir of ['usr/lib/systemd', 'usr/lib/x86_64-linux-gnu/systemd', 'usr/lib/aarch64-linux-gnu/systemd', 'usr/lib64/systemd']) {
    try {
      for (const n of await readdir(join(root, dir))) {
        const m = /^libsystemd-shared-(\d+)(?:[.-].*)?\.so$/.exec(n);
        if (m) return Number(m[1]);
      }
    } catch {
      /* next */
    }
  }
  return undefined;
}
