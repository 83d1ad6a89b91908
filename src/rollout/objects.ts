/**
 * The Kubernetes objects a rollout is made of: NodeOp (bundles, extensions) and NodeOpUpgrade (the
 * OS), operator.kairos.io/v1alpha1, with the fields of the operator's v0.1.3 CRDs.
 *
 * Canary: two objects. `<name>-canary` selects the nodes labelled `kbundle.kairos.io/canary=<name>`
 * (the administrator labels N of them), one at a time, stopping at the first failure. `<name>`
 * selects the nodes labelled `kbundle.kairos.io/rollout=<name>`, which no node is until the
 * administrator labels the rest once the canary completed. Both can be applied at once: the
 * operator re-reads its target nodes on every reconcile (at the latest every 5 minutes; applying
 * or annotating the object reconciles at once), so labelling is the gate. The canary nodes match
 * the second object too; its preflight skips them (already at the digest).
 */
import { UserError } from '../errors.js';
import { andSelectors, type LabelSelector } from './selector.js';
import { OPERATOR_API_VERSION } from './validate.js';

/** Where `kbundle image` puts the executable (its entrypoint); a NodeOp command replaces the entrypoint. */
export const KBUNDLE_IN_IMAGE = '/usr/local/bin/kbundle';
export const LABEL_CANARY = 'kbundle.kairos.io/canary';
export const LABEL_ROLLOUT = 'kbundle.kairos.io/rollout';
export const ANNOTATION_PREFIX = 'kbundle.kairos.io/';
/** The operator's preflight protocol: a non-empty file here means "skip this node". */
export const TERMINATION_LOG = '/dev/termination-log';

export interface DrainFlags {
  force?: boolean;
  gracePeriodSeconds?: number;
  timeoutSeconds?: number;
  ignoreDaemonSets?: boolean;
  deleteEmptyDirData?: boolean;
}

/** The CRD fields a user sets with flags, one flag per field. */
export interface CrdFlags {
  selector?: LabelSelector;
  concurrency?: number;
  stopOnFailure?: boolean;
  cordon?: boolean;
  uncordonOnFailure?: boolean;
  drain?: DrainFlags;
  reboot?: boolean;
  backoffLimit?: number;
  imagePullSecrets?: string[];
  hostMountPath?: string;
  preflightDeadlineSeconds?: number;
  /** NodeOpUpgrade only. */
  upgradeActive?: boolean;
  upgradeRecovery?: boolean;
  force?: boolean;
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: Record<string, unknown>;
}

export interface ObjectsInput {
  name: string;
  namespace?: string;
  annotations: Record<string, string>;
  crd: CrdFlags;
  canary?: number;
}

export interface NodeOpInput extends ObjectsInput {
  /** The digest-pinned kbundle image. */
  image: string;
  command: string[];
  preflight: string[];
}

function defined<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function metadata(name: string, input: ObjectsInput, extra: Record<string, string> = {}): KubeObject['metadata'] {
  return {
    name,
    ...(input.namespace ? { namespace: input.namespace } : {}),
    labels: { 'app.kubernetes.io/managed-by': 'kbundle' },
    annotations: { ...input.annotations, ...extra },
  };
}

/** The objects of one rollout: one, or the canary and the rest (see the file comment). */
function stages(input: ObjectsInput, make: (name: string, selector: LabelSelector | undefined, canary: boolean) => KubeObject): KubeObject[] {
  const base = input.crd.selector;
  if (input.canary === undefined) return [make(input.name, base, false)];
  if (!Number.isInteger(input.canary) || input.canary < 1) throw new UserError(`--canary: ${input.canary} must be a whole number of nodes, at least 1`);
  const canary = andSelectors(base ?? {}, { matchLabels: { [LABEL_CANARY]: input.name } }, '--canary');
  const rest = andSelectors(base ?? {}, { matchLabels: { [LABEL_ROLLOUT]: input.name } }, '--canary');
  return [make(`${input.name}-canary`, canary, true), make(input.name, rest, false)];
}

/** Flags that do not fit the object kind, or each other: refused before anything is fetched. */
export function checkCrdFlags(kind: 'nodeop' | 'upgrade', c: CrdFlags): void {
  if (kind === 'nodeop') {
    if (c.upgradeActive !== undefined || c.upgradeRecovery !== undefined || c.force !== undefined) throw new UserError('--upgrade-active, --upgrade-recovery and --force are for --os (NodeOpUpgrade)');
    if (c.drain && !c.cordon) throw new UserError('--drain needs --cordon: the operator drains only nodes it cordoned (drainOptions requires cordon)');
    if (c.uncordonOnFailure && !c.cordon) throw new UserError('--uncordon-on-failure needs --cordon');
    return;
  }
  const notHere = (
    [
      ['--cordon', c.cordon],
      ['--drain', c.drain],
      ['--reboot', c.reboot],
      ['--backoff-limit', c.backoffLimit],
      ['--host-mount-path', c.hostMountPath],
      ['--preflight-deadline', c.preflightDeadlineSeconds],
    ] as const
  ).filter(([, v]) => v !== undefined);
  if (notHere.length) {
    throw new UserError(
      `--os: ${notHere.map(([f]) => f).join(', ')} ${notHere.length > 1 ? 'are' : 'is'} not a NodeOpUpgrade field`,
      'the operator always cordons, drains and reboots for an OS upgrade; its NodeOpUpgrade takes --selector, --concurrency, --stop-on-failure, --uncordon-on-failure, --image-pull-secret, --upgrade-active, --upgrade-recovery, --force',
    );
  }
}

export function nodeOpObjects(input: NodeOpInput): KubeObject[] {
  const c = input.crd;
  checkCrdFlags('nodeop', c);
  return stages(input, (name, selector, canary) => ({
    apiVersion: OPERATOR_API_VERSION,
    kind: 'NodeOp',
    metadata: metadata(name, input, canary ? { [`${ANNOTATION_PREFIX}canary-size`]: String(input.canary) } : {}),
    spec: defined({
      image: input.image,
      command: input.command,
      hostMountPath: c.hostMountPath,
      nodeSelector: selector,
      // A canary goes one node at a time and stops at the first failure.
      concurrency: canary ? 1 : c.concurrency,
      stopOnFailure: canary ? true : c.stopOnFailure,
      cordon: c.cordon,
      uncordonOnFailure: c.uncordonOnFailure,
      drainOptions: c.drain ? { enabled: true, ...defined({ ...c.drain }) } : undefined,
      rebootOnSuccess: c.reboot,
      backoffLimit: c.backoffLimit,
      imagePullSecrets: c.imagePullSecrets?.map((n) => ({ name: n })),
      preflight: defined({ command: input.preflight, activeDeadlineSeconds: c.preflightDeadlineSeconds }),
    }),
  }));
}

export interface UpgradeInput extends ObjectsInput {
  /** The digest-pinned Kairos OS image. */
  image: string;
}

export function nodeOpUpgradeObjects(input: UpgradeInput): KubeObject[] {
  const c = input.crd;
  checkCrdFlags('upgrade', c);
  return stages(input, (name, selector, canary) => ({
    apiVersion: OPERATOR_API_VERSION,
    kind: 'NodeOpUpgrade',
    metadata: metadata(name, input, canary ? { [`${ANNOTATION_PREFIX}canary-size`]: String(input.canary) } : {}),
    spec: defined({
      image: input.image,
      nodeSelector: selector,
      concurrency: canary ? 1 : c.concurrency,
      stopOnFailure: canary ? true : c.stopOnFailure,
      uncordonOnFailure: c.uncordonOnFailure,
      upgradeActive: c.upgradeActive,
      upgradeRecovery: c.upgradeRecovery,
      force: c.force,
      imagePullSecrets: c.imagePullSecrets?.map((n) => ({ name: n })),
    }),
  }));
}

/** A LabelSelector in kubectl -l syntax (for the commands printed with a canary). */
export function formatSelector(sel: LabelSelector | undefined): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(sel?.matchLabels ?? {})) parts.push(`${k}=${v}`);
  for (const r of sel?.matchExpressions ?? []) {
    if (r.operator === 'Exists') parts.push(r.key);
    else if (r.operator === 'DoesNotExist') parts.push(`!${r.key}`);
    else parts.push(`${r.key} ${r.operator === 'In' ? 'in' : 'notin'} (${r.values!.join(',')})`);
  }
  return parts.join(',');
}

/** A DNS-1123 label from free text (the default rollout name). */
export function dnsLabel(text: string, max = 50): string {
  const s = text
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/-+/g, '-')
    .replace(/^-+/, '');
  return s.slice(0, max).replace(/-+$/, '') || 'rollout';
}
