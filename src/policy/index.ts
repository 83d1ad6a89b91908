/**
 * One entry point for trust policies, whichever format the file is in:
 * - containers-policy.json(5) (JSON; what podman, CRI-O and skopeo read), see containers-policy.ts;
 * - kbundle's YAML policy (src/verify/policy.ts): image globs → signers, with `require: all`,
 *   required annotations, keyless identities with a Sigstore trusted root and both signature
 *   formats — what containers-policy.json cannot express.
 * `decide` says which scope or entry applies and what it requires; `enforce` verifies it and names
 * the scope and requirement when it refuses. `install`, `verify`, `sysext install` and
 * `policy check` all go through `enforce`.
 */
import { existsSync } from 'node:fs';
import { readTextFileCappedSync } from '../util/read-file.js';
import { YAML_CAPS } from '../util/yaml.js';
import { resolve } from 'node:path';
import { resolveInRoot } from '../extract/secure-path.js';
import { localPolicyPaths, nodePolicyPaths, type PolicyPaths } from '../verify/policy-paths.js';
import { KbError } from '../errors.js';
import type { Descriptor } from '../oci/types.js';
import type { Target } from '../oci/target.js';
import { parsePolicy, type LoadedPolicy } from '../verify/policy.js';
import type { VerificationPolicy } from '../verify/requirements.js';
import type { VerifiedSigner } from '../verify/verify.js';
import { parseReference } from '../registry/reference.js';
import { dockerIdentity, parseContainersPolicy, referenceString, repositoryName, requirementsFor, sigstoreVerification, type ContainersPolicy } from './containers-policy.js';

/** Where a node keeps its trust policy: /usr/local persists across Kairos upgrades and reboots. */
export const NODE_POLICY_PATH = 'usr/local/etc/kbundle/policy.json';

export type TrustPolicy = { format: 'containers-policy'; path: string; policy: ContainersPolicy; paths: PolicyPaths } | { format: 'kbundle-yaml'; path: string; policy: LoadedPolicy };

/** The image being judged: a registry reference as the user wrote it, or a local layout. */
export type ImageSubject = { kind: 'registry'; reference: string } | { kind: 'local'; name: string };

export interface Decision {
  policy: string;
  /** Which list of requirements applied: `transports.docker["host/ns"]`, `default`, or `entry "name"`. */
  scope: string;
  /** One line per requirement, e.g. `sigstoreSigned (keyPath /etc/k.pub, signedIdentity matchRepository)`. */
  requirements: string[];
  /** reject: refused without looking at signatures; accept: insecureAcceptAnything only. */
  verdict: 'reject' | 'accept' | 'verify';
  checks: VerificationPolicy[];
}

export interface Enforced extends Decision {
  signers: VerifiedSigner[];
}

/** `paths`: how the files the policy names are found (src/verify/policy-paths.ts); default relative to `path`. */
export function parseTrustPolicy(text: string, path: string, paths: PolicyPaths = localPolicyPaths(path)): TrustPolicy {
  // containers-policy.json is JSON (an object); kbundle's format is YAML with `version: 1`.
  return text.trimStart().startsWith('{')
    ? { format: 'containers-policy', path, policy: parseContainersPolicy(text, path), paths }
    : { format: 'kbundle-yaml', path, policy: parsePolicy(text, path, paths) };
}

/** A policy file of this machine (`--policy FILE`): the paths in it are this machine's. */
export function loadTrustPolicy(path: string): TrustPolicy {
  return parseTrustPolicy(readTextFileCappedSync(path, YAML_CAPS.policy.maxBytes, path, { noun: 'the trust policy' }), path);
}

/**
 * The node's own policy under `root` (NODE_POLICY_PATH, found as the node would: symlinks on the
 * way resolve inside `root`), if it has one. Absolute paths are what a symlinked
 * /usr/local/etc/kbundle means on the node, not in the container kbundle may run in.
 */
export function nodePolicyPath(root = '/'): string | undefined {
  const p = resolveInRoot(resolve(root), NODE_POLICY_PATH.split('/'), true);
  return existsSync(p) ? p : undefined;
}

/** The node's own policy under `root`: the files it names are node paths, read under `root` (nodePolicyPaths). */
export function loadNodePolicy(root: string, path: string): TrustPolicy {
  return parseTrustPolicy(readTextFileCappedSync(path, YAML_CAPS.policy.maxBytes, path, { noun: 'the trust policy' }), path, nodePolicyPaths(root, path));
}

function describeRequirement(r: ContainersPolicy['default'][number]): string {
  if (r.type !== 'sigstoreSigned') return r.type;
  const src = r.fulcio
    ? `fulcio ${r.fulcio.subjectEmail} (${r.fulcio.oidcIssuer})`
    : r.keyPath
      ? `keyPath ${r.keyPath}`
      : r.keyPaths
        ? `keyPaths ${r.keyPaths.join(', ')}`
        : r.keyData
          ? 'keyData'
          : 'keyDatas';
  const rekor = r.rekorPublicKeyPath || r.rekorPublicKeyPaths || r.rekorPublicKeyData || r.rekorPublicKeyDatas ? ', Rekor' : '';
  return `sigstoreSigned (${src}${rekor}, signedIdentity ${r.signedIdentity?.type ?? 'matchRepoDigestOrExact'})`;
}

export async function decide(tp: TrustPolicy, subject: ImageSubject): Promise<Decision> {
  if (tp.format === 'kbundle-yaml') {
    const image = subject.kind === 'registry' ? repositoryName(parseReference(subject.reference, 'image')) : subject.name;
    const p = await tp.policy.policyFor(image);
    const attestations = (p.attestations ?? []).map(
      (a) => `attestation ${a.predicateType}${a.builderId ? ` (builder ${a.builderId})` : ''} by ${a.signers.map((s) => `${s.kind} ${s.name}`).join(' or ')}`,
    );
    return { policy: tp.path, scope: `entry "${p.name}"`, requirements: [...p.signers.map((s) => `${s.kind} ${s.name}`), ...attestations], verdict: 'verify', checks: [p] };
  }
  // containers-policy.json covers registries; a local layout or archive gets `default`.
  const image = subject.kind === 'registry' ? dockerIdentity(subject.reference) : undefined;
  const match = image ? requirementsFor(tp.policy, image) : { scope: 'default', requirements: tp.policy.default };
  const requirements = match.requirements.map(describeRequirement);
  const base = { policy: tp.path, scope: match.scope, requirements };
  if (match.requirements.some((r) => r.type === 'reject')) return { ...base, verdict: 'reject', checks: [] };
  const signed = match.requirements.flatMap((r, i) => (r.type === 'sigstoreSigned' ? [{ r, i }] : []));
  if (signed.length === 0) return { ...base, verdict: 'accept', checks: [] };
  if (!image) {
    throw new KbError('REFUSED', `${subject.kind === 'local' ? subject.name : ''}: ${tp.path} ${match.scope} requires sigstoreSigned, whose signedIdentity needs a registry reference`, {
      hint: 'verify the image in its registry, or give --key for a local layout',
    });
  }
  return { ...base, verdict: 'verify', checks: signed.map(({ r, i }) => sigstoreVerification(r, image, tp.path, `${match.scope}[${i}]`, tp.paths)) };
}

/**
 * Verify `desc` (already resolved from the subject) in `target` against the policy. Throws a
 * REFUSED KbError naming the policy file, scope and requirement that refused.
 */
export async function enforce(tp: TrustPolicy, subject: ImageSubject, target: Target, desc: Descriptor, opts: { display?: string; repository?: string } = {}): Promise<Enforced> {
  const d = await decide(tp, subject);
  const what = opts.display ?? (subject.kind === 'registry' ? referenceString(dockerIdentity(subject.reference)) : subject.name);
  if (d.verdict === 'reject') {
    throw new KbError('REFUSED', `${what}: refused by ${tp.path}: ${d.scope} is "reject"`, { hint: 'the node trust policy does not allow this image; change the policy if it should' });
  }
  const { verifyImage } = await import('../verify/verify.js');
  const signers: VerifiedSigner[] = [];
  for (const check of d.checks) {
    try {
      signers.push(...(await verifyImage(target as Target & Parameters<typeof verifyImage>[0], desc, check, { repository: opts.repository, display: `${what}@${desc.digest}` })));
    } catch (e) {
      if (e instanceof KbError && e.code === 'REFUSED') throw new KbError('REFUSED', `${e.message} (policy ${tp.path}, ${d.scope}: ${check.name ?? 'requirement'})`, { hint: e.hint, cause: e });
      throw e;
    }
  }
  return { ...d, signers };
}
