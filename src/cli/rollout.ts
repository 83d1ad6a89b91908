import { readFile, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { parseAllDocuments, stringify } from 'yaml';
import { errorMessage, fsErrorCode, KbError, UserError } from '../errors.js';
import { BOOT_STATES, type BootState } from '../kairos/extensions.js';
import type { CliIo } from './io.js';
import { makePrinter } from './output.js';
import { makeClient, registryOptions, type RegistryFlags } from './registry-flags.js';

interface RolloutFlags extends RegistryFlags {
  sysext?: string;
  os?: string;
  validate?: string;
  key?: string[];
  policy?: string;
  nodePolicy?: boolean;
  kbundleImage?: string;
  output?: string;
  name?: string;
  namespace?: string;
  selector?: string[];
  concurrency?: string;
  stopOnFailure?: boolean;
  cordon?: boolean;
  uncordonOnFailure?: boolean;
  drain?: boolean;
  drainForce?: boolean;
  drainGracePeriod?: string;
  drainTimeout?: string;
  drainIgnoreDaemonsets?: boolean;
  drainDeleteEmptydirData?: boolean;
  reboot?: boolean;
  backoffLimit?: string;
  imagePullSecret?: string[];
  hostMountPath?: string;
  preflightDeadline?: string;
  upgradeActive?: boolean;
  upgradeRecovery?: boolean;
  force?: boolean;
  canary?: string;
  bootState?: string;
  now?: boolean;
  ignoreRequires?: boolean;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** A whole number flag within the CRD's int32 range (and `min`). */
function intFlag(v: string | undefined, flag: string, min: number): number | undefined {
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v.trim())) throw new UserError(`${flag}: "${v}" is not a whole number`);
  const n = Number(v);
  if (n < min) throw new UserError(`${flag}: ${n} must be at least ${min}`);
  if (n > 2 ** 31 - 1) throw new UserError(`${flag}: ${n} is over the CRD's int32 range`);
  return n;
}

export function registerRollout(program: Command, io: CliIo): void {
  const cmd = program
    .command('rollout')
    .description('verify an image here, pin its digest, and write Kairos operator objects (NodeOp / NodeOpUpgrade) that install it on every selected node, verified again there')
    .argument('[target]', 'run://<registry>/<repo>:<tag> | container://… (a bundle); or use --sysext / --os')
    .option('--sysext <ref>', 'roll out a system (or configuration) extension image: <registry>/<repo>:<tag>')
    .option('--os <image>', 'roll out a Kairos OS image (NodeOpUpgrade): <registry>/<repo>:<tag>')
    .option('--validate <file>', "check Kubernetes YAML (a file, or - for stdin) against the operator's CRDs, offline, instead of rolling out")
    .option('--key <pub.pem>', 'trust signatures by this key (repeatable); nodes get the same key', collect)
    .option('--policy <file>', 'trust policy (containers-policy.json or kbundle YAML); key files it names are inlined for the nodes')
    .option('--node-policy', 'nodes verify against their own trust policy (usr/local/etc/kbundle/policy.json) instead of the one given here')
    .option('--kbundle-image <ref>', 'the kbundle container image the nodes run (kbundle image, pushed); pinned to its digest (default $KBUNDLE_IMAGE)')
    .option('-o, --output <file>', 'write the YAML here (default: standard output)')
    .option('--name <name>', 'object name (default: kbundle-<image>-<digest prefix>)')
    .option('--namespace <ns>', 'metadata.namespace (default: none; kubectl apply -n decides)')
    .option('--selector <selector>', 'nodeSelector, kubectl -l syntax: k=v, k!=v, k in (a,b), k notin (a), k, !k (repeatable: all must hold)', collect)
    .option('--concurrency <n>', 'spec.concurrency: nodes at a time (0 = all)')
    .option('--stop-on-failure', 'spec.stopOnFailure: start no more nodes after one failed')
    .option('--no-stop-on-failure', 'spec.stopOnFailure: false')
    .option('--cordon', 'spec.cordon: cordon each node first')
    .option('--no-cordon', 'spec.cordon: false')
    .option('--uncordon-on-failure', 'spec.uncordonOnFailure')
    .option('--no-uncordon-on-failure', 'spec.uncordonOnFailure: false')
    .option('--drain', 'spec.drainOptions.enabled (needs --cordon)')
    .option('--drain-force', 'spec.drainOptions.force')
    .option('--drain-grace-period <seconds>', 'spec.drainOptions.gracePeriodSeconds')
    .option('--drain-timeout <seconds>', 'spec.drainOptions.timeoutSeconds')
    .option('--drain-ignore-daemonsets', 'spec.drainOptions.ignoreDaemonSets (the operator default)')
    .option('--no-drain-ignore-daemonsets', 'spec.drainOptions.ignoreDaemonSets: false')
    .option('--drain-delete-emptydir-data', 'spec.drainOptions.deleteEmptyDirData')
    .option('--reboot', 'spec.rebootOnSuccess (default for extensions unless --now)')
    .option('--no-reboot', 'spec.rebootOnSuccess: false')
    .option('--backoff-limit <n>', 'spec.backoffLimit: retries of a failed Job')
    .option('--image-pull-secret <name>', 'spec.imagePullSecrets (repeatable)', collect)
    .option('--host-mount-path <path>', 'spec.hostMountPath (operator default /host)')
    .option('--preflight-deadline <seconds>', 'spec.preflight.activeDeadlineSeconds (operator default 120)')
    .option('--upgrade-active', '--os: spec.upgradeActive (operator default)')
    .option('--no-upgrade-active', '--os: spec.upgradeActive: false')
    .option('--upgrade-recovery', '--os: spec.upgradeRecovery')
    .option('--force', '--os: spec.force (upgrade even when the node runs that version)')
    .option('--canary <n>', 'two objects: a canary for n labelled nodes (one at a time, stop on failure), then the rest (see the comments in the output)')
    .option('--boot-state <state>', `extensions: enable in this boot state (${BOOT_STATES.join(', ')}; default active)`)
    .option('--now', 'extensions: also link into /run on the node (merged at the next refresh) instead of rebooting')
    .option('--ignore-requires', "install even where a node does not meet the image's requires: (nodes warn and record it)");
  registryOptions(cmd, { json: false });
  cmd.option('--json', 'print a JSON summary (the objects included) instead of YAML');
  cmd.action(async (target: string | undefined, o: RolloutFlags) => {
    const out = makePrinter(!!o.json, io);
    if (o.validate !== undefined) {
      if (target || o.sysext || o.os) throw new UserError('--validate checks a file; give no target with it');
      const { validateObjects } = await import('../rollout/validate.js');
      let text: string;
      try {
        text = o.validate === '-' ? await readStdin(io) : await readFile(o.validate, 'utf8');
      } catch (e) {
        throw new KbError(fsErrorCode(e), `--validate ${o.validate}: cannot read it (${errorMessage(e)})`, { cause: e });
      }
      const docs = parseAllDocuments(text);
      const objs: unknown[] = [];
      for (const d of Array.isArray(docs) ? docs : [docs]) {
        if (d.errors.length) throw new UserError(`--validate ${o.validate}: invalid YAML: ${d.errors[0]!.message.split('\n')[0]}`);
        const js: unknown = d.toJS();
        if (js !== null && js !== undefined) objs.push(js);
      }
      if (objs.length === 0) throw new UserError(`--validate ${o.validate}: no objects`);
      const bad = validateObjects(objs);
      const lines = bad.flatMap((b) => [`${o.validate}: object ${b.index + 1} (${b.name}):`, ...b.problems.map((p) => `  ${p}`)]);
      if (bad.length) {
        out.result(lines.join('\n'), { valid: false, objects: objs.length, problems: bad });
        throw new KbError('INVALID_INPUT', `${o.validate}: ${bad.length} of ${objs.length} object(s) do not validate against the operator's CRDs`);
      }
      out.result(`${o.validate}: ${objs.length} object(s) valid against the Kairos operator CRDs`, { valid: true, objects: objs.length, problems: [] });
      return;
    }

    const kinds = [target ? 'bundle' : undefined, o.sysext ? 'sysext' : undefined, o.os ? 'os' : undefined].filter(Boolean);
    if (kinds.length !== 1) throw new UserError('rollout: give one of run://<ref> | container://<ref>, --sysext <ref> or --os <image>');
    const kind = kinds[0] as 'bundle' | 'sysext' | 'os';
    if (o.bootState !== undefined && !(BOOT_STATES as readonly string[]).includes(o.bootState)) throw new UserError(`--boot-state: "${o.bootState}" must be one of ${BOOT_STATES.join(', ')}`);
    if ((o.bootState !== undefined || o.now) && kind !== 'sysext') throw new UserError('--boot-state and --now are for --sysext');
    const raw = cmd.opts();
    const explicit = (key: string) => cmd.getOptionValueSource(key) === 'cli';
    const bool = (key: keyof RolloutFlags) => (explicit(key) ? (raw[key] as boolean) : undefined);
    const { parseSelector } = await import('../rollout/selector.js');
    const drainDetail = o.drainForce || o.drainGracePeriod || o.drainTimeout || explicit('drainIgnoreDaemonsets') || o.drainDeleteEmptydirData;
    if (drainDetail && !o.drain) throw new UserError('--drain-* options need --drain');
    const crd = {
      selector: o.selector?.length ? parseSelector(o.selector) : undefined,
      concurrency: intFlag(o.concurrency, '--concurrency', 0),
      stopOnFailure: bool('stopOnFailure'),
      cordon: bool('cordon'),
      uncordonOnFailure: bool('uncordonOnFailure'),
      drain: o.drain
        ? {
            force: o.drainForce,
            gracePeriodSeconds: intFlag(o.drainGracePeriod, '--drain-grace-period', 0),
            timeoutSeconds: intFlag(o.drainTimeout, '--drain-timeout', 0),
            ignoreDaemonSets: bool('drainIgnoreDaemonsets'),
            deleteEmptyDirData: o.drainDeleteEmptydirData,
          }
        : undefined,
      reboot: bool('reboot'),
      backoffLimit: intFlag(o.backoffLimit, '--backoff-limit', 0),
      imagePullSecrets: o.imagePullSecret,
      hostMountPath: o.hostMountPath,
      preflightDeadlineSeconds: intFlag(o.preflightDeadline, '--preflight-deadline', 1),
      upgradeActive: bool('upgradeActive'),
      upgradeRecovery: bool('upgradeRecovery'),
      force: bool('force'),
    };
    if (crd.hostMountPath !== undefined && !crd.hostMountPath.startsWith('/')) throw new UserError(`--host-mount-path: "${crd.hostMountPath}" must be an absolute path`);
    const canary = intFlag(o.canary, '--canary', 1);
    const nodeRegistryArgs = [...(o.plainHttp ? ['--plain-http'] : []), ...(o.insecureRegistry ?? []).flatMap((h) => ['--insecure-registry', h])];
    const client = await makeClient(o, io);
    try {
      const { planRollout } = await import('../rollout/rollout.js');
      const plan = await planRollout({
        kind,
        target: kind === 'bundle' ? target! : kind === 'sysext' ? o.sysext! : o.os!,
        kbundleImage: kind === 'os' ? o.kbundleImage : (o.kbundleImage ?? io.env.KBUNDLE_IMAGE),
        keys: o.key,
        policyFile: o.policy,
        nodePolicy: o.nodePolicy,
        name: o.name,
        namespace: o.namespace,
        crd,
        canary,
        bootState: o.bootState as BootState | undefined,
        now: o.now,
        ignoreRequires: o.ignoreRequires,
        nodeRegistryArgs,
        client,
      });
      for (const n of plan.notes) out.warn(n);
      const yaml = [plan.header.map((l) => `# ${l}`).join('\n'), ...plan.objects.map((obj) => stringify(obj, { lineWidth: 0 }))].join('\n---\n');
      if (o.output) {
        try {
          await writeFile(o.output, yaml);
        } catch (e) {
          throw new KbError('INVALID_INPUT', `-o ${o.output}: cannot write (${errorMessage(e)})`, { cause: e });
        }
      }
      if (o.json)
        out.result('', { pinned: plan.pinned, digest: plan.digest, signer: plan.signer, requires: plan.requires ?? null, notes: plan.notes, objects: plan.objects, output: o.output ?? null });
      else if (o.output) io.stderr.write(`wrote ${o.output}: ${plan.objects.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')} for ${plan.pinned}\n`);
      else io.stdout.write(yaml);
    } finally {
      await client.close();
    }
  });
}

async function readStdin(io: CliIo): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of io.stdin) parts.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(parts).toString('utf8');
}
