import { resolve } from 'node:path';
import { UserError } from '../errors.js';
import type { ImageVerifier } from '../extract/install.js';

export interface VerifyFlags {
  key?: string;
  policy?: string;
  requireSignature?: boolean;
}

/**
 * The signature check `install` runs before writing anything, from --key / --policy: the
 * digest the reference resolved to must carry a signature that satisfies the policy.
 */
export async function verifierFromFlags(o: VerifyFlags): Promise<ImageVerifier | undefined> {
  if (o.requireSignature && !o.key && !o.policy) throw new UserError('--require-signature needs --key <pub.pem> or --policy <file>');
  if (!o.key && !o.policy) return undefined;
  if (o.key && o.policy) throw new UserError('give --key or --policy, not both');
  const v = await import('../verify/index.js');
  const fixed = o.key ? await v.keyPolicy([o.key]) : undefined;
  const loaded = o.policy ? await v.loadPolicy(o.policy) : undefined;
  return async (target, top, display) => {
    // Policies name layouts by absolute path (oci:/srv/bundles), registries as host/repo.
    const image = target.name.startsWith('oci:') ? `oci:${resolve(target.name.slice(4))}` : target.name;
    const policy = fixed ?? (await loaded!.policyFor(image));
    const signers = await v.verifyImage(target, top, policy, { repository: target.name.startsWith('oci:') ? undefined : target.name, display: `${display}@${top.digest}` });
    const s = signers[0]!;
    return s.identity ? `${s.identity} (${s.issuer})` : s.signer;
  };
}
