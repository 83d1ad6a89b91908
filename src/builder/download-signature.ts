/**
 * `signature:` of a pinned `url:` download: besides its sha256, the file must carry a signature by
 * a pinned key (a raw signature as `cosign sign-blob --output-signature` writes it, or a Sigstore
 * bundle) or by a Sigstore identity (a bundle as `cosign sign-blob --bundle` writes it, checked
 * against a trusted root). The checks are src/verify's (@sigstore/verify for certificates, logs
 * and timestamps); a download whose signature does not verify fails the build (REFUSED).
 *
 * A verified (file, signer, trust root) is remembered in the download cache next to the file, so a
 * rebuild from the cache needs no network; the cache is trusted as the downloads in it are.
 */
import { createHash, createVerify, type KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Bundle } from '@sigstore/bundle';
import { errorMessage, isKbError, KbError, UserError } from '../errors.js';
import { downloadToFile } from '../registry/download.js';
import { loadPublicKeys } from '../sign/keys.js';
import { withStagingDir, writeFileAtomic } from '../util/atomic-write.js';
import { exactMatcher, regexpMatcher } from '../verify/identity.js';
import { Limits } from '../verify/limits.js';
import type { KeylessRequirement, KeyRequirement, SignerRequirement } from '../verify/requirements.js';
import { downloadCacheDir } from './download.js';
import { bundlePath, type SignatureSpec } from './spec.js';

/** Signature material (a raw signature or a bundle) larger than this is refused. */
const MAX_SIGNATURE_BYTES = Limits.maxSignatureBlob;
/** Whole-file reads for bundle verification (@sigstore/verify hashes the artifact in memory). */
const MAX_BUNDLE_ARTIFACT = 2 * 1024 ** 3;

export interface DownloadSignatureContext {
  /** The bundle folder (key paths are inside it). */
  dir: string;
  specPath: string;
  /** `files.2` etc., for messages. */
  field: string;
  url: string;
  /**
   * trusted_root.json for keyless signatures (`--trusted-root`, else KBUNDLE_TRUSTED_ROOT).
   * Seam: once kbundle carries the public-good root (issue 15 point 5), it is the default here.
   */
  trustedRoot?: string;
}

function refused(ctx: DownloadSignatureContext, reason: string, hint?: string): KbError {
  return new KbError('REFUSED', `${ctx.specPath}: ${ctx.field}: ${ctx.url}: signature verification failed: ${reason}`, {
    hint: hint ?? 'the download is not what its signer published, or bundle.yaml names the wrong signer; nothing was built',
  });
}

/**
 * GET a small signature file through the one bounded downloader (URL check, deadlines, minimum
 * speed). The downloader's own cap is a backstop; over MAX_SIGNATURE_BYTES the file is refused
 * as a signature.
 */
async function fetchSignatureFile(url: string, ctx: DownloadSignatureContext, what: string): Promise<Buffer> {
  // A staging folder (pid-named, swept if kbundle is killed), removed afterwards.
  return withStagingDir(tmpdir(), 'sig', async (dir) => {
    const dest = join(dir, 'sig');
    await downloadToFile({ url, dest, what: `${ctx.specPath}: ${ctx.field}: the ${what}`, maxBytes: 16 * MAX_SIGNATURE_BYTES });
    if ((await stat(dest)).size > MAX_SIGNATURE_BYTES) throw refused(ctx, `the ${what} is over the ${MAX_SIGNATURE_BYTES}-byte limit`);
    return readFile(dest);
  });
}

/** A raw signature over the file with a pinned key, streamed (ECDSA/RSA over SHA-256; Ed25519 reads the file). */
async function rawSignatureVerifies(file: string, key: KeyObject, signature: Buffer): Promise<boolean> {
  try {
    if (key.asymmetricKeyType === 'ed25519') {
      const { verify } = await import('node:crypto');
      return verify(null, await readFile(file), key, signature);
    }
    const v = createVerify('sha256');
    await pipeline(createReadStream(file), v);
    return v.verify(key, signature);
  } catch {
    return false;
  }
}

function decodeRawSignature(bytes: Buffer, ctx: DownloadSignatureContext): Buffer {
  const text = bytes.toString('utf8').trim();
  if (/^[A-Za-z0-9+/]+={0,2}$/.test(text)) return Buffer.from(text, 'base64');
  throw refused(ctx, 'the signature file is not base64 (cosign sign-blob --output-signature writes base64)');
}

async function parseSigstoreBundle(bytes: Buffer, ctx: DownloadSignatureContext): Promise<Bundle> {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw refused(ctx, 'the signature bundle is not JSON', 'signature.bundle names a Sigstore bundle (cosign sign-blob --bundle, new bundle format)');
  }
  const { bundleFromJSON } = await import('@sigstore/bundle');
  let b: Bundle;
  try {
    b = bundleFromJSON(raw);
  } catch (e) {
    throw refused(ctx, `not a Sigstore bundle (${errorMessage(e)})`, 'signature.bundle names a Sigstore bundle (cosign sign-blob --bundle, new bundle format)');
  }
  // A DSSE bundle (attest-blob) signs a statement, not the file: it is not the file's signature.
  if (b.content.$case !== 'messageSignature')
    throw refused(ctx, 'the bundle holds a DSSE envelope (an attestation), not a signature of the file', 'point signature.bundle at what cosign sign-blob --bundle wrote');
  return b;
}

function requirement(sig: SignatureSpec, keys: KeyObject[] | undefined, ctx: DownloadSignatureContext, root?: import('../verify/trust.js').TrustedRoot): SignerRequirement {
  if (keys) return { kind: 'key', name: sig.key!, keys, tlog: false } satisfies KeyRequirement;
  const at = `${ctx.specPath}: ${ctx.field}.signature`;
  return {
    kind: 'keyless',
    name: sig['certificate-identity'] ?? `/${sig['certificate-identity-regexp']}/`,
    identity:
      sig['certificate-identity'] !== undefined
        ? exactMatcher(sig['certificate-identity'], `${at}.certificate-identity`)
        : regexpMatcher(sig['certificate-identity-regexp']!, `${at}.certificate-identity-regexp`),
    issuer:
      sig['certificate-oidc-issuer'] !== undefined
        ? exactMatcher(sig['certificate-oidc-issuer'], `${at}.certificate-oidc-issuer`)
        : regexpMatcher(sig['certificate-oidc-issuer-regexp']!, `${at}.certificate-oidc-issuer-regexp`),
    trustedRoot: root!,
    tlog: true,
    ctlog: true,
  } satisfies KeylessRequirement;
}

/** What the verdict depends on: the file, the signer named in bundle.yaml (key bytes included) and the trust root. */
function verdictKey(sha256: string, sig: SignatureSpec, keyBytes: Buffer | undefined, rootBytes: Buffer | undefined): string {
  const h = createHash('sha256');
  h.update(`kbundle-download-signature-v1\0${sha256}\0${JSON.stringify(sig, Object.keys(sig).sort())}\0`);
  h.update(keyBytes ?? Buffer.alloc(0));
  h.update('\0');
  h.update(rootBytes ?? Buffer.alloc(0));
  return h.digest('hex').slice(0, 32);
}

async function readInput(path: string, what: string, ctx: DownloadSignatureContext): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new KbError('NOT_FOUND', `${ctx.specPath}: ${ctx.field}.signature: cannot read the ${what} ${path} (${(e as NodeJS.ErrnoException).code ?? errorMessage(e)})`, { cause: e });
  }
}

/**
 * Check the signature of the downloaded (and sha256-verified) `file`. Returns how it was signed,
 * for the provenance; throws REFUSED when it does not verify.
 */
export async function verifyDownloadSignature(file: string, sha256: string, sig: SignatureSpec, ctx: DownloadSignatureContext): Promise<string> {
  const keyPath = sig.key ? bundlePath(ctx.dir, sig.key, ctx.specPath, `${ctx.field}.signature.key`) : undefined;
  const keyBytes = keyPath ? await readInput(keyPath, 'public key', ctx) : undefined;
  const rootPath = sig.key ? undefined : (ctx.trustedRoot ?? process.env.KBUNDLE_TRUSTED_ROOT);
  if (!sig.key && !rootPath) {
    throw new UserError(
      `${ctx.specPath}: ${ctx.field}.signature: a keyless signature needs a Sigstore trusted root`,
      'give --trusted-root <trusted_root.json> (or KBUNDLE_TRUSTED_ROOT); signing/trust-roots/public-good.json is the public-good Sigstore',
    );
  }
  const rootBytes = rootPath ? await readInput(rootPath, 'trusted root', ctx) : undefined;
  const marker = join(downloadCacheDir(), `${sha256}.signature-${verdictKey(sha256, sig, keyBytes, rootBytes)}`);
  const signer = sig.key ? `key ${sig.key}` : `keyless ${sig['certificate-identity'] ?? `/${sig['certificate-identity-regexp']}/`}`;
  try {
    if ((await stat(marker)).isFile()) return signer;
  } catch {
    /* not verified yet */
  }
  const keys = keyPath ? await loadPublicKeys(keyPath) : undefined;
  const root = rootBytes ? (await import('../verify/trust.js')).parseTrustedRoot(rootBytes.toString('utf8'), rootPath!) : undefined;
  const req = requirement(sig, keys, ctx, root);

  if (sig.sig) {
    const signature = decodeRawSignature(await fetchSignatureFile(sig.sig, ctx, 'signature'), ctx);
    let ok = false;
    for (const k of keys!) if (await rawSignatureVerifies(file, k, signature)) ok = true;
    if (!ok) throw refused(ctx, `not signed by ${sig.key}`);
  } else {
    const bundle = await parseSigstoreBundle(await fetchSignatureFile(sig.bundle!, ctx, 'signature bundle'), ctx);
    const content = bundle.content.$case === 'messageSignature' ? bundle.content.messageSignature : undefined;
    const md = content?.messageDigest;
    if (md && md.digest.length && md.digest.toString('hex') !== sha256) throw refused(ctx, `the bundle signs the digest sha256:${md.digest.toString('hex')}, not the pinned sha256:${sha256}`);
    const size = (await stat(file)).size;
    if (size > MAX_BUNDLE_ARTIFACT)
      throw new KbError('UNSUPPORTED', `${ctx.specPath}: ${ctx.field}: ${ctx.url}: ${size} bytes is too large to check against a Sigstore bundle (limit ${MAX_BUNDLE_ARTIFACT})`);
    // Seam: verifyBlob (issue 15 point 4) takes over here once it lands; the checks are the same.
    const { verifyBundleSignature } = await import('../verify/verify.js');
    try {
      await verifyBundleSignature(bundle, req, await readFile(file));
    } catch (e) {
      if (isKbError(e, 'REFUSED')) throw refused(ctx, e.message.replace(/^bundle: /, ''));
      throw e;
    }
  }
  await writeFileAtomic(marker, `${signer}\n`);
  return signer;
}
