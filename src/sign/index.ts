/**
 * Library entry for signing (what `kbundle push --sign` / `build --push --sign` call):
 *
 *   const key = await loadPrivateKey('release.key', async () => process.env.KBUNDLE_PASSWORD ?? '');
 *   await signImage(target, pushedRootDescriptor, { key, dockerReference: 'host/repo' });
 */
export { signImage, serializeBundle, type KeylessOptions, type SignedManifest, type SignOptions, type SignResult, type SignatureFormat, type WrittenSignature } from './sign.js';
export { generateKeyPair, keyFingerprint, keyHint, loadPrivateKey, loadPublicKeys, parsePublicKeys, writeKeyPair, type LoadedPrivateKey } from './keys.js';
export { dockerReferenceOf, signatureTag, BUNDLE_V03_MEDIA_TYPE, COSIGN_SIGN_PREDICATE_TYPE, SIMPLE_SIGNING_MEDIA_TYPE } from '../attach/formats.js';
export { attachReferrer, listReferrers } from '../attach/referrers.js';
export { referrersTag } from '../attach/tags.js';
