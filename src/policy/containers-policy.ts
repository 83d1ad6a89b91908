/**
 * containers-policy.json(5), the trust policy podman, CRI-O and skopeo read from
 * /etc/containers/policy.json, with containers/image's semantics
 * (signature/policy_config.go, policy_config_sigstore.go, policy_eval.go,
 * policy_reference_match.go, docker/policyconfiguration):
 * - requirements are looked up for the image's most specific scope of `transports.docker`
 *   (`host/ns/repo:tag` or `@digest`, `host/ns/repo`, each parent namespace, `host[:port]`,
 *   `*.domain` wildcards), then `transports.docker[""]`, then `default`;
 * - EVERY requirement of that list must be satisfied;
 * - `sigstoreSigned` checks cosign simple-signing signatures (the `sha256-<digest>.sig` tag, as
 *   containers/image reads them) with `signedIdentity` (default `matchRepoDigestOrExact`).
 * Fields kbundle does not implement (`signedBy` GPG, `sigstoreSigned.pki`, other transports'
 * special meaning) are errors naming the field, never silently ignored.
 */
import { createHash, createPublicKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { fsErrorCode, KbError, UserError } from '../errors.js';
import { jsonErrorOffset } from '../util/json-error-offset.js';
import { parseReference, type ImageReference } from '../registry/reference.js';
import { parsePublicKeys } from '../sign/keys.js';
import { exactMatcher } from '../verify/identity.js';
import type { SignerRequirement, VerificationPolicy } from '../verify/requirements.js';
import { parseTrustedRoot, type TrustedRoot } from '../verify/trust.js';
import { localPolicyPaths, type PolicyPaths } from '../verify/policy-paths.js';

// ---- schema ---------------------------------------------------------------------------------

const b64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64 (containers-policy.json encodes *Data fields as base64)');

const SignedIdentitySchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('matchExact') }).strict(),
  z.object({ type: z.literal('matchRepoDigestOrExact') }).strict(),
  z.object({ type: z.literal('matchRepository') }).strict(),
  z.object({ type: z.literal('exactReference'), dockerReference: z.string().min(1) }).strict(),
  z.object({ type: z.literal('exactRepository'), dockerRepository: z.string().min(1) }).strict(),
  z.object({ type: z.literal('remapIdentity'), prefix: z.string().min(1), signedPrefix: z.string().min(1) }).strict(),
]);
export type SignedIdentity = z.infer<typeof SignedIdentitySchema>;

const FulcioSchema = z
  .object({ caPath: z.string().min(1).optional(), caData: b64.optional(), oidcIssuer: z.string().min(1), subjectEmail: z.string().min(1) })
  .strict()
  .refine((f) => !!f.caPath !== !!f.caData, { message: 'give exactly one of caPath or caData' });

const SigstoreSignedSchema = z
  .object({
    type: z.literal('sigstoreSigned'),
    keyPath: z.string().min(1).optional(),
    keyPaths: z.array(z.string().min(1)).min(1).optional(),
    keyData: b64.optional(),
    keyDatas: z.array(b64).min(1).optional(),
    fulcio: FulcioSchema.optional(),
    rekorPublicKeyPath: z.string().min(1).optional(),
    rekorPublicKeyPaths: z.array(z.string().min(1)).min(1).optional(),
    rekorPublicKeyData: b64.optional(),
    rekorPublicKeyDatas: z.array(b64).min(1).optional(),
    signedIdentity: SignedIdentitySchema.optional(),
  })
  .strict()
  .refine((r) => [r.keyPath, r.keyPaths, r.keyData, r.keyDatas, r.fulcio].filter((x) => x !== undefined).length === 1, {
    message: 'give exactly one of keyPath, keyPaths, keyData, keyDatas or fulcio',
  })
  .refine((r) => [r.rekorPublicKeyPath, r.rekorPublicKeyPaths, r.rekorPublicKeyData, r.rekorPublicKeyDatas].filter((x) => x !== undefined).length <= 1, {
    message: 'give at most one of rekorPublicKeyPath, rekorPublicKeyPaths, rekorPublicKeyData or rekorPublicKeyDatas',
  })
  .refine((r) => !r.fulcio || r.rekorPublicKeyPath || r.rekorPublicKeyPaths || r.rekorPublicKeyData || r.rekorPublicKeyDatas, {
    message: 'fulcio needs a Rekor public key (rekorPublicKeyPath or rekorPublicKeyData), as in containers/image',
  });

const RequirementSchema = z.union([z.object({ type: z.literal('insecureAcceptAnything') }).strict(), z.object({ type: z.literal('reject') }).strict(), SigstoreSignedSchema]);
export type PolicyRequirement = z.infer<typeof RequirementSchema>;

const KNOWN_TYPES = new Set(['insecureAcceptAnything', 'reject', 'sigstoreSigned']);
const UNSUPPORTED_TYPES: Record<string, string> = {
  signedBy: 'GPG "simple signing" signatures (signedBy) are not supported by kbundle; sign with kbundle or cosign and use sigstoreSigned',
};

// ---- parsing --------------------------------------------------------------------------------

export interface ContainersPolicy {
  path: string;
  default: PolicyRequirement[];
  docker: Map<string, PolicyRequirement[]>;
}

function lineOf(text: string, pos: number): number {
  return text.slice(0, pos).split('\n').length;
}

function invalid(path: string, at: string, msg: string, code: 'INVALID_INPUT' | 'UNSUPPORTED' = 'INVALID_INPUT'): KbError {
  return new KbError(code, `${path}: ${at}: ${msg}`, { hint: 'see containers-policy.json(5) and signing/policies/ for examples' });
}

function parseRequirements(raw: unknown, path: string, at: string): PolicyRequirement[] {
  if (!Array.isArray(raw)) throw invalid(path, at, 'must be a list of requirements');
  if (raw.length === 0) throw invalid(path, at, 'an empty list of requirements is not allowed (containers/image refuses it too); write [{"type": "reject"}] or [{"type": "insecureAcceptAnything"}]');
  return raw.map((r: unknown, i) => {
    const where = `${at}[${i}]`;
    const type = (r as { type?: unknown } | null)?.type;
    if (typeof type !== 'string') throw invalid(path, where, 'a requirement needs a "type"');
    if (UNSUPPORTED_TYPES[type]) throw invalid(path, `${where}.type`, UNSUPPORTED_TYPES[type]!, 'UNSUPPORTED');
    if (!KNOWN_TYPES.has(type)) throw invalid(path, `${where}.type`, `unknown requirement type "${type}" (insecureAcceptAnything, reject, sigstoreSigned)`);
    if (type === 'sigstoreSigned' && r && typeof r === 'object' && 'pki' in r) {
      throw invalid(path, `${where}.pki`, 'X.509 PKI sigstore signatures (pki) are not supported by kbundle; use keyPath/keyData or fulcio', 'UNSUPPORTED');
    }
    const p = RequirementSchema.safeParse(r);
    if (!p.success) {
      const issue = p.error.issues.find((x) => x.code === 'unrecognized_keys') ?? p.error.issues.find((x) => x.path.length > 0) ?? p.error.issues[0]!;
      const field = issue.path.length ? `.${issue.path.join('.')}` : '';
      const msg = issue.code === 'unrecognized_keys' ? `unknown or unsupported field(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}` : issue.message;
      throw invalid(path, `${where}${field}`, msg);
    }
    return p.data;
  });
}

/** A scope of `transports.docker`: a reference, repository, namespace, host[:port], or `*.domain`. */
function checkDockerScope(scope: string, path: string): void {
  if (scope === '') return;
  if (scope.startsWith('*.')) {
    if (!/^\*\.[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(scope)) throw invalid(path, `transports.docker["${scope}"]`, 'a wildcard scope is *.domain, without port or path');
    return;
  }
  try {
    const first = scope.split('/')[0]!;
    if (!scope.includes('/') && !/[.:]|^localhost$/.test(first)) throw new Error('not a host');
    parseReference(scope.includes('/') ? scope : `${scope}/x`, 'scope');
  } catch {
    throw invalid(path, `transports.docker["${scope}"]`, 'not a valid scope: write host[:port], host[:port]/namespace, host[:port]/repository[:tag|@digest] or *.domain');
  }
}

export function parseContainersPolicy(text: string, path: string): ContainersPolicy {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${path}: not valid JSON (line ${lineOf(text, jsonErrorOffset(text))}): ${(e as Error).message.split('\n')[0]}`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw invalid(path, '(top level)', 'must be a JSON object with "default" and "transports"');
  const top = raw as Record<string, unknown>;
  for (const k of Object.keys(top)) if (k !== 'default' && k !== 'transports') throw invalid(path, k, 'unknown field (containers-policy.json has "default" and "transports")');
  if (!('default' in top)) throw invalid(path, 'default', 'is required (containers/image refuses a policy without it)');
  const policy: ContainersPolicy = { path, default: parseRequirements(top.default, path, 'default'), docker: new Map() };
  const transports = top.transports ?? {};
  if (!transports || typeof transports !== 'object' || Array.isArray(transports)) throw invalid(path, 'transports', 'must be an object of transport → scope → requirements');
  for (const [transport, scopes] of Object.entries(transports as Record<string, unknown>)) {
    if (!scopes || typeof scopes !== 'object' || Array.isArray(scopes)) throw invalid(path, `transports.${transport}`, 'must be an object of scope → requirements');
    if (transport !== 'docker') {
      // Only registry pulls are subject to this policy; kbundle's local transports (oci:, oci-archive:,
      // docker-archive:) are files the caller already holds. A scope that would never be consulted is an error.
      throw invalid(path, `transports.${transport}`, `kbundle applies the policy to the docker transport (registries) only; remove "${transport}" or move its scopes under "docker"`, 'UNSUPPORTED');
    }
    for (const [scope, reqs] of Object.entries(scopes as Record<string, unknown>)) {
      checkDockerScope(scope, path);
      policy.docker.set(scope, parseRequirements(reqs, path, `transports.docker["${scope}"]`));
    }
  }
  return policy;
}

// ---- scope lookup ---------------------------------------------------------------------------

/** The image as containers/image names it: normalised, `:latest` when neither tag nor digest. */
export function dockerIdentity(reference: string): ImageReference {
  const r = parseReference(reference, 'image');
  return r.tag || r.digest ? r : { ...r, tag: 'latest' };
}

export function repositoryName(r: ImageReference): string {
  return `${r.registry}/${r.repository}`;
}

export function referenceString(r: ImageReference): string {
  return `${repositoryName(r)}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}

/** Scopes from most to least specific (containers/image PolicyConfigurationNamespaces). */
export function dockerScopes(r: ImageReference): string[] {
  const scopes = [referenceString(r)];
  const parts = repositoryName(r).split('/');
  for (let n = parts.length; n >= 1; n--) scopes.push(parts.slice(0, n).join('/'));
  const host = r.registry.replace(/:\d+$/, '');
  if (!/^\[|^\d+\.\d+\.\d+\.\d+$/.test(host)) {
    const labels = host.split('.');
    for (let i = 1; i < labels.length; i++) scopes.push(`*.${labels.slice(i).join('.')}`);
  }
  return scopes;
}

export interface ScopeMatch {
  /** How the policy names the list that applied, e.g. `transports.docker["127.0.0.1:5000/kairos"]` or `default`. */
  scope: string;
  requirements: PolicyRequirement[];
}

export function requirementsFor(policy: ContainersPolicy, image: ImageReference): ScopeMatch {
  for (const s of dockerScopes(image)) {
    const reqs = policy.docker.get(s);
    if (reqs) return { scope: `transports.docker["${s}"]`, requirements: reqs };
  }
  const transportDefault = policy.docker.get('');
  if (transportDefault) return { scope: 'transports.docker[""]', requirements: transportDefault };
  return { scope: 'default', requirements: policy.default };
}

// ---- signedIdentity -------------------------------------------------------------------------

function parseSigned(ref: string | undefined): ImageReference | undefined {
  if (!ref) return undefined;
  try {
    return parseReference(ref, 'signed identity');
  } catch {
    return undefined;
  }
}

/**
 * Whether a signature whose payload names `signedRef` (critical.identity.docker-reference) is
 * accepted for `image` under `identity`. Returns why not, or undefined.
 */
export function checkSignedIdentity(identity: SignedIdentity, image: ImageReference, signedRef: string | undefined): string | undefined {
  const sig = parseSigned(signedRef);
  if (!sig) return `the signature names no valid docker-reference ("${(signedRef ?? '').slice(0, 200)}")`;
  const repoDigestOrExact = (img: ImageReference): boolean => {
    if (img.digest) return repositoryName(img) === repositoryName(sig);
    if (img.tag) return referenceString(img) === referenceString(sig);
    return false;
  };
  let ok: boolean;
  switch (identity.type) {
    case 'matchExact':
      ok = (!!image.tag || !!image.digest) && referenceString(image) === referenceString(sig);
      break;
    case 'matchRepoDigestOrExact':
      ok = repoDigestOrExact(image);
      break;
    case 'matchRepository':
      ok = repositoryName(image) === repositoryName(sig);
      break;
    case 'exactReference':
      ok = referenceString(parseReference(identity.dockerReference, 'signedIdentity.dockerReference')) === referenceString(sig);
      break;
    case 'exactRepository':
      ok = repositoryName(parseReference(identity.dockerRepository, 'signedIdentity.dockerRepository')) === repositoryName(sig);
      break;
    case 'remapIdentity': {
      const name = referenceString(image);
      const prefix = identity.prefix;
      // The prefix ends at a component boundary: host, host/ns or the whole repository.
      const matches = name === prefix || name.startsWith(`${prefix}/`) || name.startsWith(`${prefix}:`) || name.startsWith(`${prefix}@`);
      const img = matches ? parseReference(identity.signedPrefix + name.slice(prefix.length), 'remapped identity') : image;
      ok = repoDigestOrExact(img);
      break;
    }
  }
  return ok ? undefined : `signedIdentity ${identity.type}: the signature is for ${referenceString(sig)}, not accepted for ${referenceString(image)}`;
}

// ---- sigstoreSigned → verification policy ----------------------------------------------------

function readData(path: string, paths: PolicyPaths, field: string): string {
  const p = paths.resolve(path);
  try {
    return readFileSync(p, 'utf8');
  } catch (e) {
    throw new KbError(fsErrorCode(e), `${field}: cannot read ${path}${p === path ? '' : ` (${p})`}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, {
      hint: `paths in this policy are read ${paths.describe}`,
    });
  }
}

const fromB64 = (s: string): string => Buffer.from(s, 'base64').toString('utf8');

function pemBlocks(pem: string, what: string): string[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!blocks) throw new UserError(`${what}: holds no PEM certificate`);
  return blocks;
}

/** A Sigstore trusted root made of a Fulcio CA (optional) and Rekor public keys from the policy. */
function trustedRootOf(rekorPems: string[], caPem: string | undefined, what: string): TrustedRoot {
  const start = '1970-01-01T00:00:00Z';
  const tlogs = rekorPems.map((pem, i) => {
    let der: Buffer;
    try {
      der = createPublicKey(pem).export({ type: 'spki', format: 'der' });
    } catch {
      throw new UserError(`${what}: Rekor public key ${i + 1} is not a PEM public key`);
    }
    const ec = createPublicKey(pem).asymmetricKeyDetails?.namedCurve;
    const keyDetails =
      ec === 'prime256v1'
        ? 'PKIX_ECDSA_P256_SHA_256'
        : ec === 'secp384r1'
          ? 'PKIX_ECDSA_P384_SHA_384'
          : createPublicKey(pem).asymmetricKeyType === 'ed25519'
            ? 'PKIX_ED25519'
            : 'PKIX_RSA_PKCS1V15_2048_SHA256';
    return {
      baseUrl: 'https://rekor.invalid',
      hashAlgorithm: 'SHA2_256',
      publicKey: { rawBytes: der.toString('base64'), keyDetails, validFor: { start } },
      logId: { keyId: createHash('sha256').update(der).digest('base64') },
    };
  });
  const certificateAuthorities = caPem
    ? [
        {
          uri: 'https://fulcio.invalid',
          certChain: { certificates: pemBlocks(caPem, `${what}: fulcio CA`).map((b) => ({ rawBytes: new X509Certificate(b).raw.toString('base64') })) },
          validFor: { start },
        },
      ]
    : [];
  const json = { mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1', tlogs, certificateAuthorities, ctlogs: [], timestampAuthorities: [] };
  return parseTrustedRoot(JSON.stringify(json), what);
}

/** The verification one sigstoreSigned requirement asks for, for one image. */
export function sigstoreVerification(
  req: Extract<PolicyRequirement, { type: 'sigstoreSigned' }>,
  image: ImageReference,
  policyPath: string,
  label: string,
  base: PolicyPaths = localPolicyPaths(policyPath),
): VerificationPolicy {
  const rekor = [
    ...(req.rekorPublicKeyPath ? [readData(req.rekorPublicKeyPath, base, `${label}.rekorPublicKeyPath`)] : []),
    ...(req.rekorPublicKeyPaths ?? []).map((p, i) => readData(p, base, `${label}.rekorPublicKeyPaths[${i}]`)),
    ...(req.rekorPublicKeyData ? [fromB64(req.rekorPublicKeyData)] : []),
    ...(req.rekorPublicKeyDatas ?? []).map(fromB64),
  ];
  let signer: SignerRequirement;
  if (req.fulcio) {
    const f = req.fulcio;
    const ca = f.caPath ? readData(f.caPath, base, `${label}.fulcio.caPath`) : fromB64(f.caData!);
    signer = {
      kind: 'keyless',
      name: `${f.subjectEmail} (${f.oidcIssuer})`,
      identity: exactMatcher(f.subjectEmail, 'fulcio.subjectEmail'),
      issuer: exactMatcher(f.oidcIssuer, 'fulcio.oidcIssuer'),
      trustedRoot: trustedRootOf(rekor, ca, `${policyPath}: ${label}`),
      tlog: true,
      // containers/image checks the certificate chain and the Rekor SET, not SCTs.
      ctlog: false,
    };
  } else {
    const pems = [
      ...(req.keyPath ? [{ pem: readData(req.keyPath, base, `${label}.keyPath`), name: req.keyPath }] : []),
      ...(req.keyPaths ?? []).map((p, i) => ({ pem: readData(p, base, `${label}.keyPaths[${i}]`), name: p })),
      ...(req.keyData ? [{ pem: fromB64(req.keyData), name: 'keyData' }] : []),
      ...(req.keyDatas ?? []).map((d, i) => ({ pem: fromB64(d), name: `keyDatas[${i}]` })),
    ];
    const keys = pems.flatMap((k) => parsePublicKeys(k.pem, `${policyPath}: ${label} ${k.name}`));
    signer = {
      kind: 'key',
      name: pems.map((k) => k.name).join(', '),
      keys,
      tlog: rekor.length > 0,
      trustedRoot: rekor.length ? trustedRootOf(rekor, undefined, `${policyPath}: ${label}`) : undefined,
    };
  }
  const identity = req.signedIdentity ?? { type: 'matchRepoDigestOrExact' as const };
  return {
    name: `${label} sigstoreSigned`,
    signers: [signer],
    require: 'any',
    annotations: {},
    // containers/image reads cosign's simple-signing signatures (the .sig tag) only.
    formats: ['legacy'],
    identity: (signedRef) => checkSignedIdentity(identity, image, signedRef),
  };
}
