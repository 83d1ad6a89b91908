/**
 * Signing keys: ECDSA P-256 key pairs, the private key encrypted at rest in cosign's format
 * (`ENCRYPTED SIGSTORE PRIVATE KEY`: scrypt + NaCl secretbox over PKCS#8, as go-securesystemslib's
 * `encrypted` package writes it), so `cosign` reads kbundle keys and kbundle reads cosign keys.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, scrypt as scryptCb, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { z } from 'zod';
import { fsErrorCode, KbError, UserError } from '../errors.js';
import { secretboxOpen, secretboxSeal } from './secretbox.js';
import { pathExists } from '../fs-util.js';
import { writeFileAtomic } from '../util/atomic-write.js';

const scrypt = promisify(scryptCb) as (password: Buffer, salt: Buffer, keylen: number, opts: { N: number; r: number; p: number; maxmem: number }) => Promise<Buffer>;

export const SIGSTORE_PRIVATE_KEY_PEM = 'ENCRYPTED SIGSTORE PRIVATE KEY';
export const COSIGN_PRIVATE_KEY_PEM = 'ENCRYPTED COSIGN PRIVATE KEY';

/** go-securesystemslib `encrypted` defaults ("standard" strength, what cosign 2.x/3.x writes). */
export const DEFAULT_SCRYPT = { N: 65536, r: 8, p: 1 } as const;
/** Refuse key files that would make us burn more than this much memory or time. */
const MAX_SCRYPT_N = 1 << 20;
const MAX_SCRYPT_R = 32;
const MAX_SCRYPT_P = 16;
const MAX_KEY_FILE = 64 * 1024;

const b64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'not base64');
const EncryptedKeySchema = z.object({
  kdf: z.object({
    name: z.literal('scrypt'),
    params: z.object({ N: z.number().int().positive(), r: z.number().int().positive(), p: z.number().int().positive() }),
    salt: b64,
  }),
  cipher: z.object({ name: z.literal('nacl/secretbox'), nonce: b64 }),
  ciphertext: b64,
});

/** PEM with 64-character lines, as Go's `pem.EncodeToMemory` and OpenSSL write it. */
export function toPem(type: string, der: Buffer): string {
  const body = der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN ${type}-----\n${body}\n-----END ${type}-----\n`;
}

export interface PemBlock {
  type: string;
  der: Buffer;
}

/** All PEM blocks in a text, in order. Text outside blocks is ignored, as Go's pem.Decode does. */
export function parsePemBlocks(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;
  for (const m of text.matchAll(re)) {
    const body = m[2]!;
    // Headers ("Proc-Type: ...") are not used by any format we read; refuse rather than guess.
    if (/^[A-Za-z-]+:/m.test(body)) throw new KbError('UNSUPPORTED', `PEM block "${m[1]}" has headers, which kbundle does not read`);
    const clean = body.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(clean)) throw new UserError(`PEM block "${m[1]}" is not valid base64`);
    out.push({ type: m[1]!, der: Buffer.from(clean, 'base64') });
  }
  return out;
}

/** Encrypt PKCS#8 DER the way go-securesystemslib `encrypted.Encrypt` does; returns the JSON bytes. */
export async function encryptPrivateKeyDer(pkcs8: Buffer, password: string, params: { N: number; r: number; p: number } = DEFAULT_SCRYPT): Promise<Buffer> {
  const salt = randomBytes(32);
  const nonce = randomBytes(24);
  const key = await scrypt(Buffer.from(password, 'utf8'), salt, 32, { ...params, maxmem: 256 * params.N * params.r + (1 << 20) });
  const ciphertext = secretboxSeal(pkcs8, nonce, key);
  // Field order and encoding as Go's encoding/json writes the securesystemslib struct.
  const json = `{"kdf":{"name":"scrypt","params":{"N":${params.N},"r":${params.r},"p":${params.p}},"salt":"${salt.toString('base64')}"},"cipher":{"name":"nacl/secretbox","nonce":"${nonce.toString('base64')}"},"ciphertext":"${ciphertext.toString('base64')}"}`;
  return Buffer.from(json, 'utf8');
}

/** Decrypt securesystemslib JSON; throws a UserError on a wrong password or a damaged file. */
export async function decryptPrivateKeyDer(json: Buffer, password: string, what: string): Promise<Buffer> {
  let raw: unknown;
  try {
    raw = JSON.parse(json.toString('utf8'));
  } catch {
    throw new UserError(`${what}: the encrypted key is not valid JSON`);
  }
  const r = EncryptedKeySchema.safeParse(raw);
  if (!r.success) throw new UserError(`${what}: not a cosign/sigstore encrypted key (${r.error.issues[0]?.path.join('.')}: ${r.error.issues[0]?.message})`);
  const { N, r: rr, p } = r.data.kdf.params;
  if (N > MAX_SCRYPT_N || (N & (N - 1)) !== 0 || rr > MAX_SCRYPT_R || p > MAX_SCRYPT_P) {
    throw new UserError(`${what}: scrypt parameters N=${N} r=${rr} p=${p} are out of the accepted range`, `N must be a power of two up to ${MAX_SCRYPT_N}`);
  }
  const salt = Buffer.from(r.data.kdf.salt, 'base64');
  const nonce = Buffer.from(r.data.cipher.nonce, 'base64');
  if (nonce.length !== 24) throw new UserError(`${what}: the secretbox nonce must be 24 bytes`);
  const key = await scrypt(Buffer.from(password, 'utf8'), salt, 32, { N, r: rr, p, maxmem: 256 * N * rr + (1 << 20) });
  const plain = secretboxOpen(Buffer.from(r.data.ciphertext, 'base64'), nonce, key);
  if (!plain) throw new UserError(`${what}: wrong password (or the key file is damaged)`, 'set KBUNDLE_PASSWORD (or COSIGN_PASSWORD) to the password the key was created with');
  return plain;
}

/** Base64 of SHA-256 over the SPKI DER: the key hint cosign and sigstore-go write into bundles. */
export function keyHint(publicKey: KeyObject): string {
  return createHash('sha256')
    .update(publicKey.export({ format: 'der', type: 'spki' }))
    .digest('base64');
}

/** Hex form of the same fingerprint (sigstore-go's test data uses it as a hint too). */
export function keyFingerprint(publicKey: KeyObject): string {
  return createHash('sha256')
    .update(publicKey.export({ format: 'der', type: 'spki' }))
    .digest('hex');
}

export function publicKeyPem(publicKey: KeyObject): string {
  return publicKey.export({ format: 'pem', type: 'spki' }).toString();
}

export interface GeneratedKeyPair {
  privatePem: string;
  publicPem: string;
  publicKey: KeyObject;
}

export async function generateKeyPair(password: string): Promise<GeneratedKeyPair> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  const enc = await encryptPrivateKeyDer(pkcs8, password);
  return { privatePem: toPem(SIGSTORE_PRIVATE_KEY_PEM, enc), publicPem: publicKeyPem(publicKey), publicKey };
}

function writeNew(path: string, data: string, mode: number): Promise<void> {
  return writeFileAtomic(path, data, { mode });
}

/** Write `<prefix>.key` (0600) and `<prefix>.pub`; refuses to overwrite unless `force`. */
export async function writeKeyPair(prefix: string, password: string, opts: { force?: boolean } = {}): Promise<{ keyFile: string; pubFile: string; hint: string }> {
  const keyFile = `${prefix}.key`;
  const pubFile = `${prefix}.pub`;
  if (!opts.force) {
    for (const f of [keyFile, pubFile]) {
      if (await pathExists(f, { follow: true })) throw new KbError('CONFLICT', `${f} already exists`, { hint: 'choose another --out prefix, or pass --force to replace it' });
    }
  }
  const pair = await generateKeyPair(password);
  await writeNew(keyFile, pair.privatePem, 0o600);
  await writeNew(pubFile, pair.publicPem, 0o644);
  return { keyFile, pubFile, hint: keyHint(pair.publicKey) };
}

export interface LoadedPrivateKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

function checkSigningKey(privateKey: KeyObject, what: string): LoadedPrivateKey {
  if (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new KbError(
      'UNSUPPORTED',
      `${what}: kbundle signs with ECDSA P-256 keys; this is ${privateKey.asymmetricKeyType}${privateKey.asymmetricKeyDetails?.namedCurve ? ` ${privateKey.asymmetricKeyDetails.namedCurve}` : ''}`,
      { hint: 'create one with: kbundle key generate' },
    );
  }
  return { privateKey, publicKey: createPublicKey(privateKey) };
}

/**
 * Read a private key: cosign's encrypted format (either PEM type), an encrypted PKCS#8 PEM, or an
 * unencrypted PKCS#8 / SEC1 PEM. The password is only asked for when the file is encrypted.
 */
export async function loadPrivateKey(path: string, password: () => Promise<string>): Promise<LoadedPrivateKey> {
  let text: string;
  try {
    const buf = await readFile(path);
    if (buf.length > MAX_KEY_FILE) throw new UserError(`${path}: ${buf.length} bytes is too large for a key file`);
    text = buf.toString('utf8');
  } catch (e) {
    if (e instanceof KbError) throw e;
    throw new KbError(fsErrorCode(e), `${path}: cannot read the key (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
  const blocks = parsePemBlocks(text);
  const block = blocks.find((b) => /PRIVATE KEY$/.test(b.type));
  if (!block) throw new UserError(`${path}: no private key PEM block found`, 'pass the .key file written by kbundle key generate or cosign generate-key-pair');
  if (block.type === SIGSTORE_PRIVATE_KEY_PEM || block.type === COSIGN_PRIVATE_KEY_PEM) {
    const der = await decryptPrivateKeyDer(block.der, await password(), path);
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    } catch (e) {
      throw new UserError(`${path}: the decrypted key is not PKCS#8 (${(e as Error).message})`);
    }
    return checkSigningKey(key, path);
  }
  if (block.type === 'ENCRYPTED PRIVATE KEY') {
    try {
      return checkSigningKey(createPrivateKey({ key: toPem(block.type, block.der), format: 'pem', passphrase: await password() }), path);
    } catch (e) {
      if (e instanceof KbError) throw e;
      throw new UserError(`${path}: cannot decrypt the key (wrong password?)`);
    }
  }
  if (block.type === 'PRIVATE KEY' || block.type === 'EC PRIVATE KEY') {
    try {
      return checkSigningKey(createPrivateKey({ key: toPem(block.type, block.der), format: 'pem' }), path);
    } catch (e) {
      if (e instanceof KbError) throw e;
      throw new UserError(`${path}: cannot parse the private key (${(e as Error).message})`);
    }
  }
  throw new KbError('UNSUPPORTED', `${path}: unsupported private key type "${block.type}"`);
}

/**
 * Read public keys (PEM `PUBLIC KEY` blocks; a file may hold several). A certificate is not a key:
 * pinning a key must never be satisfied by whatever certificate a signature carries.
 */
export function parsePublicKeys(text: string, what: string): KeyObject[] {
  const blocks = parsePemBlocks(text);
  if (blocks.length === 0) throw new UserError(`${what}: no PEM block found`, 'pass the .pub file written by kbundle key generate or cosign generate-key-pair');
  const keys: KeyObject[] = [];
  for (const b of blocks) {
    if (b.type !== 'PUBLIC KEY')
      throw new UserError(`${what}: expected "PUBLIC KEY" PEM blocks, found "${b.type}"`, b.type === 'CERTIFICATE' ? 'for certificates use keyless verification with a trusted root' : undefined);
    let key: KeyObject;
    try {
      key = createPublicKey({ key: b.der, format: 'der', type: 'spki' });
    } catch (e) {
      throw new UserError(`${what}: not a valid public key (${(e as Error).message})`);
    }
    const t = key.asymmetricKeyType;
    if (t !== 'ec' && t !== 'rsa' && t !== 'ed25519') throw new KbError('UNSUPPORTED', `${what}: unsupported public key type ${t}`);
    keys.push(key);
  }
  return keys;
}

export async function loadPublicKeys(path: string): Promise<KeyObject[]> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (e) {
    throw new KbError(fsErrorCode(e), `${path}: cannot read the public key (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
  if (buf.length > MAX_KEY_FILE) throw new UserError(`${path}: ${buf.length} bytes is too large for a key file`);
  return parsePublicKeys(buf.toString('utf8'), path);
}
