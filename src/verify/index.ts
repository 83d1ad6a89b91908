/**
 * Library entry for verification (what `kbundle install` and other commands call):
 *
 *   const policy = await keyPolicy(['/etc/kbundle/release.pub']);          // or (await loadPolicy(file)).policyFor(image)
 *   const signers = await verifyImage(target, desc, policy, { repository }); // throws KbError REFUSED with a one-line reason
 */
import { loadPublicKeys } from '../sign/keys.js';
import type { VerificationPolicy } from './requirements.js';

export { verifyBundleSignature, verifyImage, verifyReference, verifySignatures, type VerifiedSigner, type VerifyOptions } from './verify.js';
export { globToRegExp, loadPolicy, parsePolicy, type LoadedPolicy } from './policy.js';
export { emptyTrustedRoot, loadTrustedRoot, parseTrustedRoot, type TrustedRoot } from './trust.js';
export { exactMatcher, regexpMatcher, type Matcher } from './identity.js';
export { Limits } from './limits.js';
export type { KeyRequirement, KeylessRequirement, SignatureFormat, SignerRequirement, VerificationPolicy } from './requirements.js';

/** The policy of `kbundle verify --key a.pub [--key b.pub]`: any of these keys, no log required. */
export async function keyPolicy(publicKeyFiles: string[], annotations: Record<string, string> = {}): Promise<VerificationPolicy> {
  const signers = [];
  for (const f of publicKeyFiles) signers.push({ kind: 'key' as const, name: f, keys: await loadPublicKeys(f), tlog: false });
  return { signers, require: 'any', annotations };
}
