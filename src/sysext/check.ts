import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fsErrorCode, KbError, UserError } from '../errors.js';
import { hierarchyVariable, insideHierarchies, uncoveredPaths } from './hierarchies.js';
import { inspectImage, STRICT_XATTR, type ImageInfo } from './inspect.js';
import { formatFlags, parseImagePolicy, partitionUse, policyFor, KAIROS_POLICY, type ImagePolicy, type PolicyFlag } from './policy.js';
import { imageNameFromFile, matchExtensionRelease, MODERN_NAMES_SINCE, parseReleaseFile, type ReleaseFields } from './release.js';
import { verifySignature, type TrustedCert } from './sign.js';
import { hostSystemdArch, KINDS, type ExtensionKind } from '../kairos/extensions.js';

export interface CheckOptions {
  kind?: ExtensionKind;
  /** The node's os-release fields. */
  osRelease: ReleaseFields;
  policy?: string;
  /** Certificates the node trusts for signed verity (/run/verity.d, or the firmware db under Trusted Boot). */
  certs?: TrustedCert[];
  /** systemd version on the node; decides how the image name is derived. */
  systemdVersion?: number;
  /** The node's architecture (systemd name). */
  arch?: string;
  /** `system` (booted) or `initrd`. */
  scope?: string;
  /** The file name the image will have on the node (default: its current name). */
  fileName?: string;
  /**
   * The directories the node's systemd-sysext overlays (SYSTEMD_SYSEXT_HIERARCHIES, absolute);
   * content elsewhere is reported as not merged. Default: systemd's (/usr and /opt; confext /etc).
   */
  hierarchies?: string[];
  /** How the image is named in errors (default: `path`), e.g. the source it was installed from. */
  what?: string;
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
  const policy: ImagePolicy = parseImagePolicy(opts.policy ?? KAIROS_POLICY);
  const version = opts.systemdVersion ?? DEFAULT_NODE_SYSTEMD;
  const fileName = opts.fileName ?? basename(path);
  const imageName = imageNameFromFile(fileName, version);
  const info = await inspectImage(path, kind, imageName, opts.what);
  const lines: CheckLine[] = [];
  let protection: PolicyFlag | undefined;
  const add = (ok: boolean, text: string) => lines.push({ ok, text });
  let policyRefused = false;
  const refuse = (text: string) => {
    policyRefused = true;
    add(false, text);
  };

  if (!fileName.endsWith('.raw')) add(false, `${fileName}: only *.raw files are extension images (kairos-agent and systemd ignore anything else)`);

  // --- partitions and protection -----------------------------------------------------------
  // Content facts first: is the hash tree right, whom does the signature come from.
  let verityProblem: string | undefined;
  let signer: string | undefined;
  let signatureProblem: string | undefined;
  if (info.format === 'plain') {
    add(true, `bare ${info.fsType} file system: systemd treats it as an unprotected root partition`);
  } else {
    add(true, `GPT disk image: ${info.partitions.map((p) => p.dps?.name ?? p.typeUuid).join(', ')}`);
    if (info.partitionArch && opts.arch && info.partitionArch !== opts.arch) {
      add(false, `the ${info.designator} partition is for ${info.partitionArch}, the node is ${opts.arch}: systemd only looks for partitions of the native architecture`);
    }
    if (info.verity) {
      const v = info.verity;
      const computed = v.check.rootHash.toString('hex');
      if (!v.check.treeMatches) verityProblem = `the hash tree in ${v.partition.dps!.name} does not match the data (reads would fail)`;
      else if (computed !== v.uuidRootHash) verityProblem = `partition UUIDs announce root hash ${v.uuidRootHash}, the data hashes to ${computed}`;
      else add(true, `verity: hash tree verified, root hash ${computed}`);
      if (info.signature) {
        const sig = info.signature;
        if (!sig.json) signatureProblem = sig.error;
        else if (sig.json.rootHash !== computed) signatureProblem = `it signs root hash ${sig.json.rootHash}, the data hashes to ${computed}`;
        else if ((opts.certs ?? []).length === 0) signatureProblem = 'no trusted certificate given to check it (--cert)';
        else {
          const verdict = await verifySignature(sig.json, opts.certs!);
          if (verdict.signer) signer = verdict.signer;
          else signatureProblem = verdict.notes.join('; ');
        }
      }
    }
  }

  // Then the image policy the way systemd's dissect applies it: every partition found is refused,
  // ignored or used according to its (possibly derived) policy; the data partition's protection is
  // what the used partitions make it (hash partition: verity; hash + signature: signed; neither:
  // unprotected), and the policy for root and usr must allow that (or allow them absent/unused).
  const present = new Map<string, string>(); // designator → partition name
  if (info.format === 'plain') present.set('root', `bare ${info.fsType}`);
  for (const p of info.partitions) {
    if (!p.dps || (info.partitionArch && p.dps.arch !== info.partitionArch)) continue;
    present.set(p.dps.role === 'data' ? p.dps.designator : `${p.dps.designator}-${p.dps.role}`, p.dps.name);
  }
  const used = new Set<string>();
  for (const [d, name] of present) {
    const flags = policyFor(policy, d);
    const use = partitionUse(policy, d);
    if (use === 'refuse') refuse(`image policy ${policy.text}: ${d}=absent, but the image has a ${d} partition (${name})`);
    else if (use === 'ignore') add(true, `image policy ${policy.text}: the ${d} partition is ignored (${d}=${formatFlags(flags)})`);
    else if (d.includes('-verity') && !flags.has('unprotected')) refuse(`image policy ${policy.text}: ${d}=${formatFlags(flags)} leaves no way to use the ${d} partition`);
    else used.add(d);
  }
  for (const d of ['root', 'usr'] as const) {
    const flags = policyFor(policy, d);
    const found: PolicyFlag = !present.has(d) ? 'absent' : !used.has(d) ? 'unused' : used.has(`${d}-verity`) ? (used.has(`${d}-verity-sig`) ? 'signed' : 'verity') : 'unprotected';
    const rule = `image policy ${policy.text}: ${d}=${formatFlags(flags)}`;
    if (found === 'absent' || found === 'unused') {
      if (!flags.has(found)) refuse(`${rule} requires a usable ${d} partition, the image has ${found === 'absent' ? 'none' : 'one the policy ignores'}`);
      continue;
    }
    if (!flags.has(found)) {
      const offer: Record<string, string> = {
        unprotected: info.format === 'plain' ? 'a plain file system without dm-verity' : `a ${d} partition without a used ${d}-verity partition`,
        verity: info.signature ? `dm-verity, its signature partition being ignored by the policy` : `dm-verity without a signature (not signed)`,
        signed: `a signed dm-verity image`,
      };
      const extra = flags.has('encrypted') && found === 'unprotected' ? '; kbundle images are never LUKS-encrypted' : '';
      refuse(`${rule}, but this image offers ${found} (${offer[found]})${extra}`);
      continue;
    }
    if (verityProblem && (found === 'signed' || found === 'verity')) {
      add(false, `verity: ${verityProblem}`);
      continue;
    }
    protection = found;
    if (found === 'signed') {
      // systemd checks the signature when it opens the image; with verity also allowed, it falls
      // back to plain verity when the signature is not trusted.
      if (signer) add(true, `${rule}: used as signed, signature valid, signed by ${signer}`);
      else if (flags.has('verity')) {
        protection = 'verity';
        add(true, `${rule}: used as verity (the verity signature is not trusted: ${signatureProblem}; verity alone is allowed)`);
      } else refuse(`${rule}: the verity signature is not trusted: ${signatureProblem}`);
    } else add(true, `${rule}: used as ${found}`);
  }

  if (protection === undefined && !policyRefused) {
    add(false, `image policy ${policy.text}: neither root nor usr is left to use, systemd-${kind} would find nothing to merge`);
  }

  // --- content -------------------------------------------------------------------------------
  const merged = info.topLevel.filter((t) => k.hierarchies.includes(t));
  if (merged.length === 0) add(false, `the image has no ${k.hierarchies.map((h) => `/${h}`).join(' or ')}: nothing to merge`);
  else if (opts.hierarchies) {
    const hierarchyText = `${hierarchyVariable(kind)}=${opts.hierarchies.join(':')}`;
    const outside = uncoveredPaths(info.paths, opts.hierarchies);
    // The release file (and the folders holding it) is metadata, not content to merge.
    const releaseDir = k.releaseDir;
    const isRelease = (p: string) => p === releaseDir || p.startsWith(`${releaseDir}/`) || releaseDir.startsWith(`${p}/`);
    const delivered = info.paths.filter((p) => !isRelease(p) && insideHierarchies(p, opts.hierarchies!));
    if (delivered.length === 0)
      add(false, `nothing in the image is under the node's hierarchies (${hierarchyText}): the merge would add none of its files (${outside.map((o) => `/${o}`).join(', ')} stay out)`);
    else if (outside.length) info.warnings.push(`not merged on this node, outside ${hierarchyText}: ${outside.map((o) => `/${o}`).join(', ')}`);
  } else {
    const ignored = info.topLevel.filter((t) => !k.hierarchies.includes(t));
    if (ignored.length) info.warnings.push(`ignored by systemd-${kind} (not merged): ${ignored.map((t) => `/${t}`).join(', ')}`);
  }
  if (kind === 'sysext' && info.hasOsRelease) add(false, `the image contains /usr/lib/os-release, which systemd refuses (on 252 this aborts the whole merge, not just this image)`);

  let releaseName: string | undefined = info.releaseFiles.has(imageName) ? imageName : undefined;
  let ambiguous = false;
  if (!releaseName && info.relaxedReleases?.length) {
    // systemd's fallback for renamed images: the single release file tagged strict=false.
    const relaxed = info.relaxedReleases.filter(imageNameIsValid);
    if (relaxed.length === 1) {
      releaseName = relaxed[0]!;
      add(true, `${k.releaseDir}/extension-release.${releaseName} is tagged ${STRICT_XATTR}=0: systemd uses it for the image name "${imageName}"`);
    } else if (relaxed.length > 1) {
      ambiguous = true;
      add(false, `${relaxed.length} release files are tagged ${STRICT_XATTR}=0 (${relaxed.map((n) => `extension-release.${n}`).join(', ')}): systemd refuses the ambiguity`);
    }
  }
  const release = releaseName === undefined ? undefined : info.releaseFiles.get(releaseName);
  if (!release) {
    if (!ambiguous) {
      const have = [...info.releaseFiles.keys()].map((n) => `extension-release.${n}`);
      const xattrNote = info.relaxedReleases === undefined && have.length ? ` (whether one is tagged ${STRICT_XATTR}=0 cannot be read from ${info.fsType})` : '';
      add(false, `${describeVersionRule(version)} looks for ${k.releaseDir}/extension-release.${imageName}; the image has ${have.length ? have.join(', ') : 'no extension-release file'}${xattrNote}`);
    }
  } else {
    if (releaseName === imageName) add(true, `${k.releaseDir}/extension-release.${imageName} found`);
    const m = matchExtensionRelease(imageName, kind, { fields: opts.osRelease, architecture: opts.arch ?? hostSystemdArch(), scope: opts.scope ?? 'system', systemdVersion: version }, release);
    add(m.ok, `compatibility: ${m.reason}`);
  }
  const reasons = lines.filter((l) => !l.ok).map((l) => l.text);
  return { ok: reasons.length === 0, info, imageName, protection, lines, reasons };
}

/** systemd's image_name_is_valid(): a plain file name, no control characters, not a ".#" temp file. */
function imageNameIsValid(n: string): boolean {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what systemd rejects
  return n !== '' && n !== '.' && n !== '..' && !n.includes('/') && !/[\x00-\x1f\x7f]/.test(n) && !n.startsWith('.#') && n.length <= 255;
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
  } catch (e) {
    if (e instanceof KbError) throw e;
    throw new KbError(fsErrorCode(e), `--os-release: cannot read ${path}`, { cause: e });
  }
}

export { detectSystemdVersion } from '../kairos/systemd-version.js';
