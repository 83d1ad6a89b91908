/**
 * `kbundle rollout`: verify an image on the workstation, pin it, and write the Kairos operator
 * objects that install it on every selected node — where kbundle verifies it again, with the same
 * policy, before anything is written (a node trusts nothing the workstation says).
 *
 *   bundle   NodeOp: kbundle install run://REF@sha256:… --root $(HOST_DIR) --policy-base64 …
 *   sysext   NodeOp: kbundle sysext install oci:REF@sha256:… --root $(HOST_DIR) … --enable <state>
 *   os       NodeOpUpgrade: image REF@sha256:… (the operator runs kairos-agent upgrade)
 *
 * Bundles and extensions get a preflight: `kbundle status --check …` on the read-only host root,
 * which writes a reason to /dev/termination-log (the operator then skips the node) when the node
 * already has that digest or does not meet the image's `requires:`.
 *
 * The image runs kbundle directly (no shell), so `$(HOST_DIR)` is expanded by Kubernetes from the
 * container's environment (the operator sets HOST_DIR to hostMountPath), not by a shell.
 */
import { KbError, UserError } from '../errors.js';
import { parseBundleTarget } from '../extract/bundle-uri.js';
import type { Descriptor } from '../oci/types.js';
import { fetchBytes, type Target } from '../oci/target.js';
import { isIndexMediaType } from '../oci/mediatypes.js';
import type { RegistryClient } from '../registry/client.js';
import { parseReference, pinnedReference, type ImageReference } from '../registry/reference.js';
import { openSource } from '../store/open.js';
import type { BootState, ExtensionKind } from '../kairos/extensions.js';
import { verifierFromFlags } from '../policy/verifier.js';
import {
  ANNOTATION_PREFIX,
  checkCrdFlags,
  dnsLabel,
  formatSelector,
  KBUNDLE_IN_IMAGE,
  LABEL_CANARY,
  LABEL_ROLLOUT,
  nodeOpObjects,
  nodeOpUpgradeObjects,
  TERMINATION_LOG,
  type CrdFlags,
  type KubeObject,
} from './objects.js';
import { shipKeyPolicy, shipPolicyFile, type ShippedPolicy } from './policy.js';
import { validateObjects } from './validate.js';
import { REQUIRES_ANNOTATION, requiresFromAnnotations, type Requires } from '../requires/requires.js';
import { requiresToSelector } from './requires-selector.js';
import { andSelectors } from './selector.js';

export type RolloutKind = 'bundle' | 'sysext' | 'os';

export interface RolloutRequest {
  kind: RolloutKind;
  /** bundle: run://REF | container://REF | docker://REF; sysext: REF or oci:REF; os: REF. */
  target: string;
  /** The kbundle image the nodes run (bundle, sysext); pinned here unless it already is. */
  kbundleImage?: string;
  /** Whom to trust: public keys, or a policy file (inlined into the objects). */
  keys?: string[];
  policyFile?: string;
  /** Nodes verify against their own policy (usr/local/etc/kbundle/policy.json) instead. */
  nodePolicy?: boolean;
  name?: string;
  namespace?: string;
  crd: CrdFlags;
  canary?: number;
  /** sysext: the boot state to enable it for (default active), and whether to link it now. */
  bootState?: BootState;
  now?: boolean;
  ignoreRequires?: boolean;
  /** Registry flags the node's kbundle needs too (--plain-http, --insecure-registry …). */
  nodeRegistryArgs?: string[];
  client: RegistryClient;
}

export interface RolloutPlan {
  objects: KubeObject[];
  /** YAML comment lines: what was verified, and how to apply (and, with a canary, proceed). */
  header: string[];
  /** Things the user should know (printed on stderr): constraints left to the preflight, … */
  notes: string[];
  /** `host/repo@sha256:…`. */
  pinned: string;
  digest: string;
  signer: string;
  requires?: Requires;
}

interface Verified {
  ref: ImageReference;
  pinned: string;
  top: Descriptor;
  signer: string;
  annotations: Record<string, string>;
}

async function annotationsOf(target: Target, top: Descriptor): Promise<Record<string, string>> {
  const doc = JSON.parse((await fetchBytes(target, top)).toString('utf8')) as { annotations?: Record<string, string>; manifests?: Descriptor[] };
  const own = doc.annotations ?? {};
  if (!isIndexMediaType(top.mediaType) || own[REQUIRES_ANNOTATION] !== undefined) return own;
  // An index without them: the first platform manifest's (kbundle writes the same on every one).
  const first = doc.manifests?.[0];
  if (!first) return own;
  const m = JSON.parse((await fetchBytes(target, first)).toString('utf8')) as { annotations?: Record<string, string> };
  return { ...(m.annotations ?? {}), ...own };
}

/** Resolve `ref` to its digest and verify that digest exactly as a node will (same policy, same reference). */
async function verifyOnWorkstation(refText: string, policy: ShippedPolicy, client: RegistryClient): Promise<Verified> {
  const ref = parseReference(refText, 'rollout');
  const opened = await openSource({ transport: 'docker', ref: refText }, { client });
  let top: Descriptor;
  try {
    top = await opened.target.resolve(opened.reference);
  } finally {
    await opened.close();
  }
  if (ref.digest && ref.digest !== top.digest) throw new KbError('DIGEST_MISMATCH', `${refText}: the registry answered ${top.digest}`);
  const pinned = pinnedReference(ref, top.digest);
  const verify = (await verifierFromFlags({ policyBase64: policy.base64 }))!;
  const node = await openSource({ transport: 'docker', ref: pinned }, { client });
  try {
    const desc = await node.target.resolve(node.reference);
    let signer: string;
    try {
      signer = (await verify(node.target, desc, node.display)) ?? 'verified';
    } catch (e) {
      if (e instanceof KbError) throw new KbError(e.code, `rollout refused: ${e.message}`, { hint: e.hint ?? 'nothing was written; sign the image, or fix --key/--policy', cause: e });
      throw e;
    }
    return { ref, pinned, top: desc, signer, annotations: await annotationsOf(node.target, desc) };
  } finally {
    await node.close();
  }
}

async function pinImage(refText: string, client: RegistryClient, what: string): Promise<string> {
  const ref = parseReference(refText, what);
  const opened = await openSource({ transport: 'docker', ref: refText }, { client });
  try {
    const top = await opened.target.resolve(opened.reference);
    if (ref.digest && ref.digest !== top.digest) throw new KbError('DIGEST_MISMATCH', `${what} ${refText}: the registry answered ${top.digest}`);
    return pinnedReference(ref, top.digest);
  } finally {
    await opened.close();
  }
}

function shippedPolicy(req: RolloutRequest, repository: string): ShippedPolicy {
  if (req.keys?.length && req.policyFile) throw new UserError('rollout: give --key or --policy, not both');
  if (req.keys?.length) return shipKeyPolicy(req.keys, repository);
  if (req.policyFile) return shipPolicyFile(req.policyFile);
  throw new UserError(
    'rollout verifies the image before anything is written: give --key <pub.pem> or --policy <file>',
    'with --node-policy the nodes use their own policy, but the workstation still checks first',
  );
}

/** `kbundle install`-side verification flags for the node's command. */
function nodeVerifyArgs(req: RolloutRequest, policy: ShippedPolicy): string[] {
  return req.nodePolicy ? ['--require-signature'] : ['--policy-base64', policy.base64];
}

export async function planRollout(req: RolloutRequest): Promise<RolloutPlan> {
  const notes: string[] = [];
  let refText: string;
  let scheme = '';
  if (req.kind === 'bundle') {
    const t = parseBundleTarget(req.target, 'rollout');
    scheme = t.scheme;
    refText = t.ref;
  } else refText = req.target.replace(/^(oci|docker|container):(\/\/)?/, '');
  const parsed = parseReference(refText, 'rollout');
  // Everything that needs no network is checked before the registry is asked anything.
  checkCrdFlags(req.kind === 'os' ? 'upgrade' : 'nodeop', req.crd);
  if (req.canary !== undefined && (!Number.isInteger(req.canary) || req.canary < 1)) throw new UserError(`--canary: ${req.canary} must be a whole number of nodes, at least 1`);
  if (req.kind === 'os' && (req.kbundleImage || req.nodePolicy || req.bootState || req.now || req.ignoreRequires))
    throw new UserError(
      '--os: --kbundle-image, --node-policy, --boot-state, --now and --ignore-requires are for bundles and extensions',
      'the operator upgrades with kairos-agent from the OS image itself',
    );
  if (req.kind !== 'os' && !req.kbundleImage) {
    throw new UserError(
      'rollout: name the kbundle image the nodes run: --kbundle-image <registry>/<repo>:<tag> (or set KBUNDLE_IMAGE)',
      'build it with kbundle image -o oci:out/kbundle-image:kbundle, then kbundle push it',
    );
  }
  const repository = `${parsed.registry}/${parsed.repository}`;
  const policy = shippedPolicy(req, repository);
  const v = await verifyOnWorkstation(refText, policy, req.client);
  const digest = v.top.digest;
  const requires = requiresFromAnnotations(v.annotations, `${refText}@${digest}`);
  const type = v.annotations['io.kairos.bundle.type'];
  const name = req.name ?? dnsLabel(`kbundle-${req.kind === 'os' ? 'os' : ''}-${parsed.repository.split('/').pop()}-${digest.slice(7, 15)}`);
  const annotations: Record<string, string> = {
    [`${ANNOTATION_PREFIX}target`]: req.kind === 'bundle' ? `${scheme}://${v.pinned}` : v.pinned,
    [`${ANNOTATION_PREFIX}verified-signer`]: v.signer,
    [`${ANNOTATION_PREFIX}trust`]: req.nodePolicy ? 'node policy' : policy.source,
  };
  let crd = req.crd;
  if (requires) {
    const mapped = requiresToSelector(requires);
    if (mapped.selector) crd = { ...crd, selector: andSelectors(crd.selector ?? {}, mapped.selector, 'requires') };
    for (const k of mapped.preflightOnly) notes.push(`requires.${k} has no node label to select on; the preflight checks it on each node`);
  }

  let objects: KubeObject[];
  if (req.kind === 'os') {
    objects = nodeOpUpgradeObjects({ name, namespace: req.namespace, annotations, crd, canary: req.canary, image: v.pinned });
    notes.push('the OS image is verified here only: the operator upgrades with kairos-agent, which does not check kbundle signatures on the node');
  } else {
    const imageRef = req.kbundleImage;
    if (!imageRef) {
      throw new UserError(
        'rollout: name the kbundle image the nodes run: --kbundle-image <registry>/<repo>:<tag> (or set KBUNDLE_IMAGE)',
        'build it with kbundle image -o oci:out/kbundle-image:kbundle, then kbundle push it',
      );
    }
    const image = await pinImage(imageRef, req.client, '--kbundle-image');
    const root = '$(HOST_DIR)';
    const reg = req.nodeRegistryArgs ?? [];
    const ignore = req.ignoreRequires ? ['--ignore-requires'] : [];
    const checkRequires = requires && !req.ignoreRequires ? ['--requires', JSON.stringify(requires)] : [];
    let command: string[];
    let check: string[];
    if (req.kind === 'bundle') {
      if (type && type !== 'run' && type !== 'container' && type !== undefined) throw new UserError(`${refText}: a ${type} image; roll it out with --sysext`);
      const target = `${scheme}://${v.pinned}`;
      command = [KBUNDLE_IN_IMAGE, 'install', target, '--root', root, ...nodeVerifyArgs(req, policy), ...ignore, ...reg];
      check = ['--check', target];
    } else {
      if (type && type !== 'sysext' && type !== 'confext') throw new UserError(`${refText}: a ${type} bundle, not an extension image; roll it out as run:// or container://`);
      const kind: ExtensionKind = type === 'confext' ? 'confext' : 'sysext';
      const target = `oci:${v.pinned}`;
      const state = req.bootState ?? 'active';
      command = [KBUNDLE_IN_IMAGE, kind, 'install', target, '--root', root, ...nodeVerifyArgs(req, policy), '--enable', state, ...(req.now ? ['--now'] : []), ...ignore, ...reg];
      check = ['--check', target, '--kind', kind];
      // An extension merges at boot: reboot by default, unless --now links it for the next refresh.
      if (req.crd.reboot === undefined && !req.now) crd = { ...crd, reboot: true };
      if (req.now)
        notes.push('--now links the extension into /run on each node; the NodeOp Job cannot restart systemd-sysext on the host (no host PID namespace), so it merges at the next refresh or boot');
    }
    const preflight = [KBUNDLE_IN_IMAGE, 'status', '--root', root, ...check, ...checkRequires, '--termination-log', TERMINATION_LOG];
    objects = nodeOpObjects({ name, namespace: req.namespace, annotations, crd, canary: req.canary, image, command, preflight });
  }

  const bad = validateObjects(objects);
  if (bad.length) {
    throw new UserError(
      `rollout: the objects would not be accepted by the operator's CRDs:\n${bad.map((b) => `  ${b.name}: ${b.problems.join('; ')}`).join('\n')}`,
      'nothing was written; fix the flags named above',
    );
  }

  const shown = req.kind === 'bundle' ? `${scheme}://${v.pinned}` : v.pinned;
  const header = [
    `kbundle rollout: ${shown}`,
    `verified on the workstation (${v.signer}); every node verifies it again ${req.kind === 'os' ? '(not for --os: see notes)' : req.nodePolicy ? 'against its own trust policy' : 'against the policy carried in the command'}`,
    `apply: kubectl apply -f <this file>${req.namespace ? '' : ' [-n <namespace>]'}`,
  ];
  if (req.canary !== undefined) {
    const sel = formatSelector(crd.selector);
    const obj = req.kind === 'os' ? 'nodeopupgrade' : 'nodeop';
    header.push(
      `canary: nothing runs until nodes are labelled.`,
      `  1. label ${req.canary} canary node(s): kubectl get nodes${sel ? ` -l '${sel}'` : ''} -o name | head -n ${req.canary} | xargs -I{} kubectl label {} ${LABEL_CANARY}=${name}`,
      `  2. wait:  kubectl wait ${obj}/${name}-canary --for=jsonpath='{.status.phase}'=Completed --timeout=1h   (Failed: stop here)`,
      `  3. the rest: kubectl label nodes${sel ? ` -l '${sel}'` : ''} ${LABEL_ROLLOUT}=${name}   (then kubectl annotate ${obj}/${name} ${ANNOTATION_PREFIX}go=1 to start at once)`,
    );
  }
  return { objects, header, notes, pinned: v.pinned, digest, signer: v.signer, ...(requires ? { requires } : {}) };
}
