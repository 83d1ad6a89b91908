import type { Command } from 'commander';
import { KbError, UserError } from '../errors.js';
import type { TrustPolicy } from '../policy/index.js';
import type { CliIo } from './io.js';
import { makeClient, registryOptions, type RegistryFlags } from './registry-flags.js';
import { openImage } from './sign.js';

interface PolicyCheckFlags extends RegistryFlags {
  policy?: string;
  root: string;
  json?: boolean;
}

/**
 * Verify `arg` against a trust policy and say which scope and requirement decided (used by
 * `policy check` and by `verify --policy <containers-policy.json>`). Throws REFUSED when refused.
 */
export async function checkAgainstPolicy(arg: string, tp: TrustPolicy, o: RegistryFlags & { json?: boolean }, io: CliIo): Promise<void> {
  const { decide, enforce } = await import('../policy/index.js');
  const client = await makeClient(o, io);
  try {
    const img = await openImage(arg, client, 'pull');
    const subject = img.repository ? { kind: 'registry' as const, reference: img.display.replace(/^docker:\/\//, '') } : { kind: 'local' as const, name: img.image };
    const decision = await decide(tp, subject);
    const head = [`policy: ${tp.path} (${tp.format})`, `scope: ${decision.scope}`, ...decision.requirements.map((r) => `requires: ${r}`)];
    let result;
    try {
      const desc = await img.target.resolve(img.reference);
      result = await enforce(tp, subject, img.target, desc, { repository: img.repository, display: img.display });
      const lines = result.signers.length
        ? result.signers.map((s) => `  ${s.format} ${s.location}: ${s.identity ? `${s.identity} (${s.issuer})` : s.signer}`)
        : ['  insecureAcceptAnything: accepted without a signature check'];
      if (o.json)
        io.stdout.write(
          `${JSON.stringify({ accepted: true, reference: img.display, digest: desc.digest, policy: tp.path, format: tp.format, scope: decision.scope, requirements: decision.requirements, signers: result.signers }, null, 2)}\n`,
        );
      else io.stdout.write(`${[`accepted ${img.display}@${desc.digest}`, ...head, ...lines].join('\n')}\n`);
    } catch (e) {
      if (o.json && e instanceof KbError)
        io.stdout.write(
          `${JSON.stringify({ accepted: false, reference: img.display, policy: tp.path, format: tp.format, scope: decision.scope, requirements: decision.requirements, error: e.message }, null, 2)}\n`,
        );
      else if (!o.json) io.stdout.write(`${[`refused ${img.display}`, ...head].join('\n')}\n`);
      throw e;
    }
  } finally {
    await client.close();
  }
}

export function registerPolicy(program: Command, io: CliIo): void {
  const policy = program.command('policy').description('trust policies: containers-policy.json(5) or kbundle YAML');
  const check = policy
    .command('check')
    .description('which scope and requirement of the trust policy apply to an image, and whether it passes them')
    .argument('<image>', 'host/repo:tag, host/repo@sha256:…, or oci:<dir>[:tag]')
    .option('--policy <file>', 'the policy file (default: the node policy <root>/usr/local/etc/kbundle/policy.json)')
    .option('--root <dir>', 'the node root whose policy applies', '/');
  registryOptions(check);
  check.action(async (arg: string, o: PolicyCheckFlags) => {
    const { loadTrustPolicy, loadNodePolicy, nodePolicyPath, NODE_POLICY_PATH } = await import('../policy/index.js');
    const path = o.policy ?? nodePolicyPath(o.root);
    if (!path)
      throw new UserError(
        `no --policy given and the node has no ${NODE_POLICY_PATH} under ${o.root}`,
        'write the node trust policy there (see signing/policies/node-policy.json) or pass --policy <file>',
      );
    await checkAgainstPolicy(arg, o.policy ? loadTrustPolicy(o.policy) : loadNodePolicy(o.root, path), o, io);
  });
}
