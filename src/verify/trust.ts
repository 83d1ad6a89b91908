/**
 * Trusted roots (`trusted_root.json`, the Sigstore TrustedRoot protobuf as JSON, as cosign
 * `--trusted-root` and sigstore-js read it). Carried on the node; nothing is fetched.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { TrustedRoot } from '@sigstore/protobuf-specs';
import { z } from 'zod';
import { fsErrorCode, KbError, UserError } from '../errors.js';
import { Limits } from './limits.js';

export type { TrustedRoot };

// The protobuf-specs package costs ~30 ms to load; keyed verification never needs it, so it is
// required on first use. A literal `require(...)` where one exists (the bundled CLI and the node
// executable, where esbuild embeds the package), createRequire under plain ESM (dist/src).
function protobufTrustedRoot(): typeof import('@sigstore/protobuf-specs').TrustedRoot {
  const specs: typeof import('@sigstore/protobuf-specs') =
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a literal require is what lets esbuild embed the package
    typeof require === 'function' ? require('@sigstore/protobuf-specs') : createRequire(import.meta.url)('@sigstore/protobuf-specs');
  return specs.TrustedRoot;
}

const b64 = z
  .string()
  .max(64 * 1024)
  .regex(/^[A-Za-z0-9+/_-]*={0,2}$/, 'not base64');
// A validity period must say when it starts (sigstore-go and sigstore-python refuse a root without
// it; @sigstore/verify would read it as "since the beginning of time"); an open end may be null.
const validFor = z
  .object({ start: z.string({ required_error: 'a validity period needs its start' }), end: z.string().nullable().optional() })
  .passthrough()
  .optional();
const publicKey = z.object({ rawBytes: b64, keyDetails: z.string().optional(), validFor }).passthrough();
const logInstance = z
  .object({
    baseUrl: z.string().url(),
    hashAlgorithm: z.string().optional(),
    publicKey,
    logId: z.object({ keyId: b64 }),
  })
  .passthrough();
const certAuthority = z
  .object({
    uri: z.string().optional(),
    certChain: z.object({
      certificates: z
        .array(z.object({ rawBytes: b64 }).passthrough())
        .min(1)
        .max(Limits.maxCertificates),
    }),
    validFor,
  })
  .passthrough();

const TrustedRootSchema = z
  .object({
    mediaType: z.string().startsWith('application/vnd.dev.sigstore.trustedroot', 'not a Sigstore trusted root media type').optional(),
    tlogs: z.array(logInstance).max(64).default([]),
    certificateAuthorities: z.array(certAuthority).max(64).default([]),
    ctlogs: z.array(logInstance).max(64).default([]),
    timestampAuthorities: z.array(certAuthority).max(64).default([]),
  })
  .passthrough();

export function parseTrustedRoot(text: string, what: string): TrustedRoot {
  if (text.length > Limits.maxTrustedRootBytes) throw new UserError(`${what}: larger than ${Limits.maxTrustedRootBytes} bytes; not a trusted root`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${what}: not valid JSON (${(e as Error).message})`);
  }
  const r = TrustedRootSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new UserError(
      `${what}: not a trusted root: ${i.path.join('.') || '(top level)'}: ${i.message}`,
      'pass a trusted_root.json as cosign trusted-root create or the Sigstore TUF repository writes it',
    );
  }
  try {
    return protobufTrustedRoot().fromJSON(r.data);
  } catch (e) {
    throw new UserError(`${what}: not a trusted root (${(e as Error).message})`);
  }
}

export async function loadTrustedRoot(path: string): Promise<TrustedRoot> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new KbError(fsErrorCode(e), `${path}: cannot read the trusted root (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
  return parseTrustedRoot(text, path);
}

/** A root that trusts nothing: keyed verification without transparency-log requirements. */
export function emptyTrustedRoot(): TrustedRoot {
  return protobufTrustedRoot().fromJSON({ mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1', tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [] });
}
