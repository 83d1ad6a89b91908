import { resolve } from 'node:path';
import { UserError } from '../errors.js';
import type { ImageVerifier } from '../extract/install.js';

export interface VerifyFlags {
  key?: string;
  policy?: string;
  /** A self-contained policy given inline (what `kbundle rollout` puts in a NodeOp command). */
  policyBase64?: string;
  requireSignature?: boolean;
  /** The node root: its usr/local/etc/kbundle/policy.json applies when neither --key nor --policy is given. */
  root?: string;
}

/** Decode `--policy-base64` (what a rollout's command carries). */
export function decodePolicyBase64(b64: string): string {
  if (!/^[A-Za-z0-9+/]+=*$/.test(b64)) throw new UserError('--policy-base64: not base64');
  return Buffer.from(b64, 'base64').toString('utf8');
}

/**
 * The signature check `install` and `sysext install` run before writing anything: --key, or a
 * trust policy (--policy, else the node's own policy under --root): the digest the reference
 * resolved to must satisfy it.
 */
export async function verifierFromFlags(o: VerifyFlags): Promise<ImageVerifier | undefined> {
  if ([o.key, o.policy, o.policyBase64].filter(Boolean).length > 1) throw new UserError('give one of --key, --policy or --policy-base64');
  const { loadTrustPolicy, loadNodePolicy, parseTrustPolicy, enforce, nodePolicyPath } = await import('./index.js');
  const policyPath = o.policy ?? (o.key || o.policyBase64 ? undefined : nodePolicyPath(o.root));
  if (!o.key && !policyPath && !o.policyBase64) {
    if (o.requireSignature)
      throw new UserError('--require-signature needs --key <pub.pem> or --policy <file>', `or put the node's trust policy at ${resolve(o.root ?? '/', 'usr/local/etc/kbundle/policy.json')}`);
    return undefined;
  }
  const v = await import('../verify/index.js');
  if (o.key) {
    const fixed = await v.keyPolicy([o.key]);
    return async (target, top, display) => {
      const signers = await v.verifyImage(target, top, fixed, { repository: target.name.startsWith('oci:') ? undefined : target.name, display: `${display}@${top.digest}` });
      const s = signers[0]!;
      return s.identity ? `${s.identity} (${s.issuer})` : s.signer;
    };
  }
  // --policy is a file of this machine; the node's own policy names node paths (read under --root).
  const policy = o.policyBase64 ? parseTrustPolicy(decodePolicyBase64(o.policyBase64), '--policy-base64') : o.policy ? loadTrustPolicy(o.policy) : loadNodePolicy(o.root ?? '/', policyPath!);
  return async (target, top, display) => {
    // Registries are judged by the reference as written (containers-policy signedIdentity needs
    // its tag or digest); layouts by absolute path (oci:/srv/bundles).
    const local = target.name.startsWith('oci:');
    const subject = local ? { kind: 'local' as const, name: `oci:${resolve(target.name.slice(4))}` } : { kind: 'registry' as const, reference: display.replace(/^docker:\/\//, '') };
    const r = await enforce(policy, subject, target, top, { repository: local ? undefined : target.name, display });
    const s = r.signers[0];
    if (!s) return `accepted by ${r.scope} of ${r.policy} (insecureAcceptAnything)`;
    return s.identity ? `${s.identity} (${s.issuer})` : s.signer;
  };
}
