import type { Command } from 'commander';
import { KbError, UserError } from '../errors.js';
import { readTextFileCapped } from '../util/read-file.js';
import { YAML_CAPS } from '../util/yaml.js';
import { installBundle, installFromConfig, parseCloudConfigBundles, type ConfigTarget, type ImageVerifier } from '../extract/install.js';
import { parsePlatform } from '../oci/platform.js';
import type { CliIo } from './io.js';
import { makePrinter } from './output.js';
import { makeClient, registryOptions, type RegistryFlags } from './registry-flags.js';
import { verifierFromFlags, type VerifyFlags } from '../policy/verifier.js';

interface InstallFlags extends RegistryFlags, VerifyFlags {
  root: string;
  localFile?: boolean;
  config?: string;
  sameOwner?: boolean;
  allowSetuid?: boolean;
  allowDevices?: boolean;
  xattrs?: boolean;
  scriptTimeout?: string;
  unconfinedScripts?: boolean;
  lockTimeout?: string;
  ignoreRequires?: boolean;
}

export function registerInstall(program: Command, io: CliIo): void {
  const cmd = program
    .command('install')
    .description('install bundles the way Kairos does (run://, container://, docker://), verifying signatures first')
    .argument('[target]', 'run://<image> | container://<image> | docker://<image> (with --local-file: a docker-archive, OCI archive or OCI layout path)')
    .option('--root <dir>', 'install under this root instead of / (run.sh then runs confined to it, the root as its /)', '/')
    .option('--config <cloud-config.yaml>', 'install every target of the bundles: block of a Kairos cloud-config')
    .option('--local-file', 'the target names a local archive or layout (Kairos local_file: true)')
    .option('--platform <os/arch>', 'platform to install from a multi-platform image (default: this host)')
    .option('--same-owner', 'keep file owners from the image (root only)')
    .option('--allow-setuid', 'keep setuid/setgid bits')
    .option('--allow-devices', 'create device nodes and fifos (root only)')
    .option('--no-xattrs', 'do not apply extended attributes recorded in the layers')
    .option('--script-timeout <seconds>', 'stop a run.sh that runs longer than this (default 1800, or KBUNDLE_SCRIPT_TIMEOUT)')
    .option('--lock-timeout <seconds>', 'wait this long for another install into the same root to finish (default 300; 0: fail at once)')
    .option('--unconfined-scripts', 'under --root, run run.sh on this host with KBUNDLE_ROOT set instead of confined to the root (trusted bundles only)')
    .option('--ignore-requires', "install even when the node does not meet the image's requires: (warned, and kept in the install record)");
  registryOptions(cmd);
  addVerifyOptions(cmd);
  cmd.action(async (target: string | undefined, o: InstallFlags) => {
    const out = makePrinter(!!o.json, io);
    if (!target && !o.config) throw new UserError('install: name a target (run://…, container://…) or --config <cloud-config.yaml>');
    if (target && o.config) throw new UserError('install: give a target or --config, not both');
    const client = await makeClient(o, io);
    const base = {
      root: o.root,
      client,
      platform: o.platform ? parsePlatform(o.platform, '--platform') : undefined,
      sameOwner: o.sameOwner,
      allowSetuid: o.allowSetuid,
      allowDevices: o.allowDevices,
      xattrs: o.xattrs,
      onOutput: o.json ? undefined : (s: string) => io.stderr.write(s),
      scriptTimeoutMs: seconds(o.scriptTimeout ?? process.env.KBUNDLE_SCRIPT_TIMEOUT, '--script-timeout'),
      unconfinedScripts: o.unconfinedScripts,
      lock: {
        timeoutMs: seconds(o.lockTimeout, '--lock-timeout', true),
        onWait: (holder: string) => io.stderr.write(`kbundle: waiting for the install into ${o.root} that holds its lock (${holder})\n`),
      },
      ignoreRequires: o.ignoreRequires,
      onWarning: (m: string) => out.warn(m),
    };
    try {
      if (target) {
        const r = await installBundle(target, { ...base, localFile: o.localFile, verify: await verifierFromFlags(o) });
        out.result(`installed ${target} (${r.digest}${r.verified ? `, signed by ${r.verified}` : ''}) under ${o.root}`, r);
        return;
      }
      const file = o.config!;
      const text = await readTextFileCapped(file, YAML_CAPS.cloudConfig.maxBytes, `--config ${file}`);
      const targets = parseCloudConfigBundles(text, file);
      const flagVerifier = await verifierFromFlags(o);
      const perTarget = async (t: ConfigTarget): Promise<ImageVerifier | undefined> =>
        t.cosign ? ((await verifierFromFlags({ ...o, key: t.cosignKey ?? o.key, requireSignature: true })) ?? undefined) : flagVerifier;
      const verifiers = new Map<ConfigTarget, ImageVerifier | undefined>();
      for (const t of targets) verifiers.set(t, await perTarget(t));
      const outcomes = await installFromConfig(targets, { ...base, cloudConfig: text }, (t) => verifiers.get(t));
      const failed = outcomes.filter((x) => !x.ok);
      out.result(outcomes.map((x) => (x.ok ? `ok      ${x.target} (${x.result!.digest})` : `FAILED  ${x.target}: ${x.error}`)).join('\n') || `${file}: no bundles`, {
        ok: failed.length === 0,
        outcomes,
      });
      if (failed.length) {
        // One kind of failure keeps its code (all refused: REFUSED); a mix is reported as bad input.
        const codes = new Set(failed.map((x) => x.code ?? 'INVALID_INPUT'));
        throw new KbError(codes.size === 1 ? [...codes][0]! : 'INVALID_INPUT', `${failed.length} of ${outcomes.length} bundle(s) from ${file} failed`);
      }
    } finally {
      await client.close();
    }
  });
}

function seconds(value: string | undefined, flag: string, zeroOk = false): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || (n === 0 && !zeroOk)) throw new UserError(`${flag} ${value}: not a ${zeroOk ? 'non-negative' : 'positive'} number of seconds`);
  return n * 1000;
}

function addVerifyOptions(cmd: Command): void {
  cmd
    .option('--key <pub.pem>', 'require a signature by this public key before installing')
    .option(
      '--policy <file>',
      'require signatures as this trust policy says before installing (containers-policy.json or kbundle YAML; default: the node policy <root>/usr/local/etc/kbundle/policy.json when it exists)',
    )
    .option('--policy-base64 <data>', 'a self-contained trust policy, base64 (what kbundle rollout puts in a NodeOp command)')
    .option('--require-signature', 'refuse images without a valid signature (needs --key or --policy)');
}
