import { createHash, X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { withStagingDir } from '../util/atomic-write.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fsErrorCode, KbError, UserError } from '../errors.js';
import { runTool } from './tools.js';

/**
 * The verity signature partition (DPS "root-verity-sig"): a JSON object
 * `{"rootHash": hex, "certificateFingerprint": sha256-hex of the signer's DER certificate,
 * "signature": base64 of a detached PKCS#7 signature over the root hash hex string}`, NUL-padded to
 * a multiple of 4096 bytes. This is what systemd-repart's Verity=signature writes and what
 * systemd-dissect / the kernel's dm-verity signature check consume. Signing and verifying use
 * `openssl smime` (the same PKCS#7 encoding systemd uses: binary, no signed attributes); with an
 * RSA key the signature, and so the image, is byte-for-byte reproducible.
 */
export interface VeritySignature {
  rootHash: string;
  certificateFingerprint: string;
  signature: string;
}

export async function loadCertificate(path: string, what = '--cert'): Promise<X509Certificate> {
  let pem: Buffer;
  try {
    pem = await readFile(path);
  } catch (e) {
    throw new KbError(fsErrorCode(e), `${what}: cannot read ${path}`, { cause: e });
  }
  try {
    return new X509Certificate(pem);
  } catch (e) {
    throw new UserError(`${what}: ${path} is not an X.509 certificate (${(e as Error).message})`, 'give a PEM or DER certificate, e.g. the db.pem used to sign');
  }
}

export function certificateFingerprint(cert: X509Certificate): string {
  return createHash('sha256').update(cert.raw).digest('hex');
}

const withTemp = <T>(fn: (dir: string) => Promise<T>): Promise<T> => withStagingDir(tmpdir(), 'sig', fn);

/** Sign a root hash; returns the signature partition content (JSON, NUL-padded to 4096). */
export async function signRootHash(rootHashHex: string, keyPath: string, certPath: string): Promise<{ json: VeritySignature; partition: Buffer }> {
  const cert = await loadCertificate(certPath);
  return withTemp(async (dir) => {
    const content = join(dir, 'roothash');
    await writeFile(content, rootHashHex);
    const out = join(dir, 'sig.der');
    const r = await runTool('openssl', ['smime', '-sign', '-binary', '-noattr', '-in', content, '-signer', certPath, '-inkey', keyPath, '-outform', 'DER', '-out', out]);
    if (r.code !== 0) throw new UserError(`signing the verity root hash failed: ${r.stderr.trim().split('\n')[0]}`, 'check that --key is the private key of --cert (PEM, unencrypted)');
    const der = await readFile(out);
    const json: VeritySignature = { rootHash: rootHashHex, certificateFingerprint: certificateFingerprint(cert), signature: der.toString('base64') };
    const text = Buffer.from(JSON.stringify(json));
    const partition = Buffer.alloc(Math.ceil((text.length + 1) / 4096) * 4096);
    text.copy(partition);
    return { json, partition };
  });
}

/** Parse the signature partition (JSON followed by NUL padding). */
export function parseSignaturePartition(buf: Buffer, what: string): VeritySignature {
  const end = buf.indexOf(0);
  const text = buf.subarray(0, end < 0 ? buf.length : end).toString('utf8');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new UserError(`${what}: verity signature partition does not hold JSON`);
  }
  const o = v as Partial<VeritySignature>;
  if (typeof o.rootHash !== 'string' || !/^[0-9a-f]+$/.test(o.rootHash) || typeof o.signature !== 'string') {
    throw new UserError(`${what}: verity signature JSON lacks rootHash/signature`);
  }
  return { rootHash: o.rootHash, certificateFingerprint: typeof o.certificateFingerprint === 'string' ? o.certificateFingerprint : '', signature: o.signature };
}

export interface SignatureVerdict {
  /** The certificate (path) that verified it, if any. */
  signer?: string;
  /** One line per certificate tried. */
  notes: string[];
}

/**
 * Verify the PKCS#7 signature over the root hash against each certificate, as systemd does with
 * the certificates in /run/verity.d or the firmware's db: the certificate itself is the trust anchor
 * (PKCS7_NOINTERN|PKCS7_NOVERIFY: certificates inside the signature are not trusted, chains are not built).
 */
/** A certificate file, optionally with the name to show for it (e.g. "firmware db entry 2"). */
export type TrustedCert = string | { path: string; label: string };

export async function verifySignature(sig: VeritySignature, certs: TrustedCert[]): Promise<SignatureVerdict> {
  const notes: string[] = [];
  if (certs.length === 0) return { notes: ['no certificates given to verify against'] };
  return withTemp(async (dir) => {
    const content = join(dir, 'roothash');
    const der = join(dir, 'sig.der');
    await writeFile(content, sig.rootHash);
    await writeFile(der, Buffer.from(sig.signature, 'base64'));
    for (const entry of certs) {
      const c = typeof entry === 'string' ? entry : entry.path;
      const label = typeof entry === 'string' ? entry : entry.label;
      const cert = await loadCertificate(c);
      const fp = certificateFingerprint(cert);
      const r = await runTool('openssl', ['smime', '-verify', '-binary', '-inform', 'DER', '-in', der, '-content', content, '-certfile', c, '-nointern', '-noverify', '-out', '/dev/null']);
      if (r.code === 0) {
        notes.push(`${label}: signature valid${sig.certificateFingerprint && sig.certificateFingerprint !== fp ? ' (fingerprint field names another certificate)' : ''}`);
        return { signer: label, notes };
      }
      notes.push(`${label} (${cert.subject.replace(/\n/g, ', ')}): does not verify the signature`);
    }
    return { notes };
  });
}
