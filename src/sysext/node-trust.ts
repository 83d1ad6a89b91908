import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { makeStagingDir, removeStagingDir } from '../util/atomic-write.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { pathExists } from '../fs-util.js';
import { guidToString } from './gpt.js';
import { KAIROS_POLICY, KAIROS_TRUSTED_BOOT_POLICY } from './policy.js';
import { kairosHierarchies, readUnitSettings } from './hierarchies.js';
import type { TrustedCert } from './sign.js';
import type { ExtensionKind } from '../kairos/extensions.js';

/**
 * What a Kairos node trusts when it merges extension images, read from its root file system:
 * - the image policy: the `--image-policy` of its systemd-sysext.service drop-in when it has one
 *   (a running node); else Trusted Boot (UKI) nodes, marked by immucore's /run/cos/uki_boot_mode
 *   (or uki_install_mode) sentinel, merge signed verity images only, others verity images;
 * - the hierarchies merged: the drop-in's SYSTEMD_SYSEXT_HIERARCHIES, else Kairos's list;
 * - the certificates a verity signature may come from: the X.509 entries of the firmware's PK,
 *   KEK and db variables (what a Trusted Boot node enrolled), and systemd's verity.d folders.
 */
export interface NodeTrust {
  trustedBoot: boolean;
  policy: string;
  /** Where the policy came from, for messages. */
  policySource: string;
  /** The directories the node's systemd-sysext (confext) overlays. */
  hierarchies: string[];
  /** PEM files, one certificate each (firmware entries are written to a scratch folder). */
  certs: TrustedCert[];
  /** Where the certificates came from, for messages. */
  sources: string[];
  close(): Promise<void>;
}

const EFI_GLOBAL_VARIABLE = '8be4df61-93ca-11d2-aa0d-00e098032b8c';
const EFI_IMAGE_SECURITY_DATABASE = 'd719b2cb-3d3a-4596-a3bc-dad00e67656f';
const EFI_CERT_X509 = 'a5c059a1-94e4-4aa7-87b5-ab155c2bf072';
const FIRMWARE_VARS: Array<[string, string]> = [
  ['PK', EFI_GLOBAL_VARIABLE],
  ['KEK', EFI_GLOBAL_VARIABLE],
  ['db', EFI_IMAGE_SECURITY_DATABASE],
];
const VERITY_DIRS = ['etc/verity.d', 'run/verity.d', 'usr/local/lib/verity.d', 'usr/lib/verity.d'];

/** The DER certificates of the X.509 entries in a list of EFI_SIGNATURE_LISTs (UEFI 2.x §32.4.1). */
export function x509FromSignatureLists(data: Buffer, what: string): Buffer[] {
  const certs: Buffer[] = [];
  for (let off = 0; off < data.length;) {
    if (off + 28 > data.length) throw new UserError(`${what}: truncated EFI signature list at byte ${off}`);
    const type = guidToString(data.subarray(off, off + 16));
    const listSize = data.readUInt32LE(off + 16);
    const headerSize = data.readUInt32LE(off + 20);
    const sigSize = data.readUInt32LE(off + 24);
    if (listSize < 28 + headerSize || off + listSize > data.length || sigSize < 16) throw new UserError(`${what}: malformed EFI signature list at byte ${off}`);
    if (type === EFI_CERT_X509) {
      for (let p = off + 28 + headerSize; p + sigSize <= off + listSize; p += sigSize) certs.push(Buffer.from(data.subarray(p + 16, p + sigSize)));
    }
    off += listSize;
  }
  return certs;
}

function toPem(der: Buffer): string {
  const b64 = der
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

export async function nodeTrust(root: string, kind: ExtensionKind = 'sysext'): Promise<NodeTrust> {
  const trustedBoot = (await pathExists(join(root, 'run/cos/uki_boot_mode'))) || (await pathExists(join(root, 'run/cos/uki_install_mode')));
  // A running Kairos node has its systemd-sysext drop-in (written at boot): its --image-policy and
  // SYSTEMD_SYSEXT_HIERARCHIES are exactly what the merge uses. An offline root has none yet.
  const unit = await readUnitSettings(root, kind);
  const certs: TrustedCert[] = [];
  const sources: string[] = [];
  let scratch: string | undefined;
  try {
    for (const [name, guid] of FIRMWARE_VARS) {
      const file = join(root, 'sys/firmware/efi/efivars', `${name}-${guid}`);
      let raw: Buffer;
      try {
        raw = await readFile(file);
      } catch {
        continue;
      }
      // efivarfs files start with the variable's 4-byte attributes.
      const ders = x509FromSignatureLists(raw.subarray(4), file);
      for (const [i, der] of ders.entries()) {
        scratch ??= await makeStagingDir(tmpdir(), 'node-certs');
        const pem = join(scratch, `firmware-${name}-${i + 1}.pem`);
        await writeFile(pem, toPem(der));
        certs.push({ path: pem, label: `firmware ${name} entry ${i + 1}` });
      }
      if (ders.length) sources.push(`${ders.length} certificate(s) in the firmware's ${name}`);
    }
    for (const dir of VERITY_DIRS) {
      let names: string[];
      try {
        names = (await readdir(join(root, dir))).filter((n) => n.endsWith('.crt')).sort();
      } catch {
        continue;
      }
      for (const n of names) {
        if ((await stat(join(root, dir, n))).isFile()) certs.push({ path: join(root, dir, n), label: `/${dir}/${n}` });
      }
      if (names.length) sources.push(`/${dir}`);
    }
  } catch (e) {
    if (scratch) await removeStagingDir(scratch);
    throw e;
  }
  const fallback = trustedBoot ? KAIROS_TRUSTED_BOOT_POLICY : KAIROS_POLICY;
  return {
    trustedBoot,
    policy: unit.imagePolicy ?? fallback,
    policySource: unit.imagePolicy ? `--image-policy of ${unit.files.join(', ')}` : trustedBoot ? 'Kairos Trusted Boot default (/run/cos/uki_boot_mode)' : 'Kairos default',
    hierarchies: unit.hierarchies ?? kairosHierarchies(kind),
    certs,
    sources,
    close: async () => {
      if (scratch) await removeStagingDir(scratch);
    },
  };
}

/** What to check an image against: the policy and certificates given, else the node's own. */
export interface CheckTrust {
  policy: string;
  certs: TrustedCert[];
  /** The node's Trusted Boot policy is in force (no policy was given). */
  trustedBoot: boolean;
  /** The directories the merge overlays: given, else the node's, else Kairos's. */
  hierarchies: string[];
}

/**
 * Run `fn` with the policy and certificates to check against: a given policy wins over the
 * node's, given certificates come before the node's. Without a root, only what was given (and
 * Kairos's default policy). Scratch files are removed afterwards.
 */
export async function withCheckTrust<T>(
  root: string | undefined,
  given: { policy?: string; certs?: TrustedCert[]; hierarchies?: string[]; kind?: ExtensionKind },
  fn: (t: CheckTrust) => Promise<T>,
): Promise<T> {
  const kind = given.kind ?? 'sysext';
  const node = root === undefined ? undefined : await nodeTrust(root, kind);
  try {
    return await fn({
      policy: given.policy ?? node?.policy ?? KAIROS_POLICY,
      certs: [...(given.certs ?? []), ...(node?.certs ?? [])],
      trustedBoot: given.policy === undefined && !!node?.trustedBoot,
      hierarchies: given.hierarchies ?? node?.hierarchies ?? kairosHierarchies(kind),
    });
  } finally {
    await node?.close();
  }
}
