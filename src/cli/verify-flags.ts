import type { ImageVerifier } from '../extract/install.js';
import type { RegistryClient } from '../registry/client.js';
import { UserError } from '../errors.js';

export interface VerifyFlags {
  key?: string;
  policy?: string;
  requireSignature?: boolean;
}

/** The signature check `install` runs before writing anything, from --key / --policy. */
export async function verifierFromFlags(o: VerifyFlags, _client: RegistryClient): Promise<ImageVerifier | undefined> {
  if (o.requireSignature && !o.key && !o.policy) throw new UserError('--require-signature needs --key <pub.pem> or --policy <file>');
  if (!o.key && !o.policy) return undefined;
  throw new UserError('signature verification is not wired into install yet');
}
