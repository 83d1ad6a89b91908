/**
 * cosign's on-registry formats, byte for byte. Each builder notes the Go source it mirrors; the
 * tests compare against real cosign output kept in test/fixtures/sigstore/.
 *
 * - Legacy ("attached") signatures: tag `sha256-<hex>.sig`, an OCI image manifest whose config is
 *   the go-containerregistry config of an appended empty image, one layer per signature with media
 *   type `application/vnd.dev.cosign.simplesigning.v1+json`, the layer blob being the simple-signing
 *   payload and the signature material in layer annotations (cosign pkg/oci/static/signature.go,
 *   pkg/oci/mutate/signatures.go, sigstore/sigstore pkg/signature/payload/payload.go).
 * - Sigstore bundles (cosign 3 default): a v0.3 bundle whose DSSE envelope carries an in-toto
 *   statement (predicate type `https://sigstore.dev/cosign/sign/v1`) about the image digest, pushed
 *   as a referrer manifest with `subject` (cosign pkg/oci/remote/write.go WriteReferrer).
 *
 * - Attestations (cosign attest): an in-toto statement about the image digest in a DSSE envelope,
 *   either as a layer of the `sha256-<hex>.att` image (media type
 *   `application/vnd.dsse.envelope.v1+json`, the envelope as Go's json.Marshal writes it, layer
 *   annotations `predicateType`, an empty `dev.cosignproject.cosign/signature` and the certificate
 *   / Rekor / timestamp annotations; cmd/cosign/cli/attest/attest.go, pkg/oci/static) or as a v0.3
 *   bundle referrer with `dev.sigstore.bundle.predicateType` (WriteAttestationNewBundleFormat).
 *
 * Tag names (`sha256-<hex>.sig`/`.att`/`.sbom`, the `sha256-<hex>` referrers index) are in ./tags.ts.
 */
import { UserError } from '../errors.js';
import { digestOf, parseDigest } from '../oci/digest.js';
import { MediaType } from '../oci/mediatypes.js';
import type { Descriptor } from '../oci/types.js';

export const SIMPLE_SIGNING_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const COSIGN_SIGNATURE_TYPE = 'cosign container image signature';
export const BUNDLE_V03_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
export const INTOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';
export const INTOTO_STATEMENT_V1 = 'https://in-toto.io/Statement/v1';
export const INTOTO_STATEMENT_V01 = 'https://in-toto.io/Statement/v0.1';
export const COSIGN_SIGN_PREDICATE_TYPE = 'https://sigstore.dev/cosign/sign/v1';
/** Layer media type of attestations in `sha256-<hex>.att` (cosign types.DssePayloadType). */
export const DSSE_ENVELOPE_MEDIA_TYPE = 'application/vnd.dsse.envelope.v1+json';
/** Layer annotation cosign writes on `.att` layers with the predicate type URI. */
export const PREDICATE_TYPE_ANNOTATION = 'predicateType';

export const Annotations = {
  Signature: 'dev.cosignproject.cosign/signature',
  Certificate: 'dev.sigstore.cosign/certificate',
  Chain: 'dev.sigstore.cosign/chain',
  Bundle: 'dev.sigstore.cosign/bundle',
  RFC3161Timestamp: 'dev.sigstore.cosign/rfc3161timestamp',
  BundleContent: 'dev.sigstore.bundle.content',
  BundlePredicateType: 'dev.sigstore.bundle.predicateType',
  Created: 'org.opencontainers.image.created',
} as const;

/** `{}`: the config blob of artifact manifests (image-spec "empty descriptor"). */
export const EMPTY_JSON = Buffer.from('{}');
export const EMPTY_DESCRIPTOR: Descriptor = { mediaType: MediaType.OciEmpty, digest: digestOf(EMPTY_JSON), size: 2 };

/** go-containerregistry's zero `v1.Time`, which cosign leaves in signature configs by default. */
const GO_ZERO_TIME = '0001-01-01T00:00:00Z';

/**
 * A JSON string literal as Go's encoding/json writes it: `<`, `>`, `&`, U+2028 and U+2029 are
 * escaped (HTML-safe), control characters use \n \r \t \b \f or \u00XX.
 */
export function goJsonString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (c < 0x20 || ch === '<' || ch === '>' || ch === '&' || c === 0x2028 || c === 0x2029) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

/** A Go `map[string]string` (keys sorted), or `null` for a nil map. */
function goStringMap(m: Record<string, string> | undefined, nilWhenEmpty: boolean): string {
  if (!m || (nilWhenEmpty && Object.keys(m).length === 0)) return 'null';
  const keys = Object.keys(m).sort();
  return `{${keys.map((k) => `${goJsonString(k)}:${goJsonString(m[k]!)}`).join(',')}}`;
}

/**
 * The simple-signing payload cosign signs (sigstore/sigstore payload.Cosign.MarshalJSON):
 * `{"critical":{"identity":{"docker-reference":R},"image":{"docker-manifest-digest":D},"type":T},"optional":O}`
 * with `optional` null when there are no annotations.
 */
export function simpleSigningPayload(dockerReference: string, digest: string, annotations?: Record<string, string>): Buffer {
  parseDigest(digest, 'payload digest');
  const json =
    `{"critical":{"identity":{"docker-reference":${goJsonString(dockerReference)}},"image":{"docker-manifest-digest":${goJsonString(digest)}},` +
    `"type":${goJsonString(COSIGN_SIGNATURE_TYPE)}},"optional":${goStringMap(annotations, true)}}`;
  return Buffer.from(json, 'utf8');
}

/**
 * The in-toto statement `cosign sign --new-bundle-format` signs (cosign 3 signDigestBundle, protojson
 * of in_toto_attestation.v1.Statement): subject = the digest with (possibly empty) annotations, no
 * predicate body. Field order follows the proto field numbers.
 */
export function signStatement(digest: string, annotations?: Record<string, string>): Buffer {
  const { algorithm, hex } = parseDigest(digest, 'statement digest');
  const json =
    `{"_type":"${INTOTO_STATEMENT_V1}","subject":[{"digest":{"${algorithm}":"${hex}"},"annotations":${goStringMap(annotations ?? {}, false)}}],` + `"predicateType":"${COSIGN_SIGN_PREDICATE_TYPE}"}`;
  return Buffer.from(json, 'utf8');
}

/** Go `v1.Descriptor` field order: mediaType, size, digest, data, urls, annotations, platform, artifactType. */
function goDescriptor(d: Descriptor): string {
  let s = `{"mediaType":${goJsonString(d.mediaType)},"size":${d.size},"digest":${goJsonString(d.digest)}`;
  if (d.annotations && Object.keys(d.annotations).length) s += `,"annotations":${goStringMap(d.annotations, false)}`;
  if (d.artifactType) s += `,"artifactType":${goJsonString(d.artifactType)}`;
  return `${s}}`;
}

/**
 * Config blob of a cosign signature image: what go-containerregistry computes for `empty.Image`
 * with one appended layer per signature (`mutate.Append`), `created` left at Go's zero time as
 * cosign does unless --record-creation-timestamp.
 */
export function legacySignatureConfig(layerDigests: string[], created?: string): Buffer {
  const history = layerDigests.map(() => `{"created":"${GO_ZERO_TIME}"}`).join(',');
  const diffIds = layerDigests.map((d) => goJsonString(d)).join(',');
  return Buffer.from(`{"architecture":"","created":"${created ?? GO_ZERO_TIME}","history":[${history}],"os":"","rootfs":{"type":"layers","diff_ids":[${diffIds}]},"config":{}}`, 'utf8');
}

/** The `sha256-<hex>.sig` manifest: OCI manifest, OCI config, one simple-signing layer per signature. */
export function legacySignatureManifest(config: Descriptor, layers: Descriptor[]): Buffer {
  return Buffer.from(`{"schemaVersion":2,"mediaType":"${MediaType.OciManifest}","config":${goDescriptor(config)},"layers":[${layers.map(goDescriptor).join(',')}]}`, 'utf8');
}

/** RFC 3339 in UTC without fractions, as Go's `time.Now().UTC().Format(time.RFC3339)`. */
export function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * The referrer manifest cosign 3 pushes for a bundle (WriteAttestationNewBundleFormat →
 * WriteReferrer, go-containerregistry v1.Manifest + artifactType): empty config that repeats the
 * artifactType, one bundle layer, annotations, subject.
 */
export function bundleReferrerManifest(bundle: Descriptor, subject: Descriptor, created: Date, predicateType = COSIGN_SIGN_PREDICATE_TYPE): Buffer {
  const config: Descriptor = { ...EMPTY_DESCRIPTOR, artifactType: BUNDLE_V03_MEDIA_TYPE };
  const annotations = { [Annotations.BundleContent]: 'dsse-envelope', [Annotations.BundlePredicateType]: predicateType, [Annotations.Created]: rfc3339(created) };
  const subj: Descriptor = { mediaType: subject.mediaType, digest: subject.digest, size: subject.size };
  return Buffer.from(
    `{"schemaVersion":2,"mediaType":"${MediaType.OciManifest}","config":${goDescriptor(config)},"layers":[${goDescriptor({ mediaType: BUNDLE_V03_MEDIA_TYPE, digest: bundle.digest, size: bundle.size })}],` +
      `"annotations":${goStringMap(annotations, false)},"subject":${goDescriptor(subj)},"artifactType":"${BUNDLE_V03_MEDIA_TYPE}"}`,
    'utf8',
  );
}

/** cosign's `dev.sigstore.cosign/bundle` annotation (pkg/cosign/bundle.RekorBundle). */
export interface RekorBundle {
  SignedEntryTimestamp: string;
  Payload: { body: string; integratedTime: number; logIndex: number; logID: string };
}

export function rekorBundleAnnotation(b: RekorBundle): string {
  const p = b.Payload;
  return `{"SignedEntryTimestamp":${goJsonString(b.SignedEntryTimestamp)},"Payload":{"body":${goJsonString(p.body)},"integratedTime":${p.integratedTime},"logIndex":${p.logIndex},"logID":${goJsonString(p.logID)}}}`;
}

/** cosign's `dev.sigstore.cosign/rfc3161timestamp` annotation (pkg/cosign/bundle.RFC3161Timestamp). */
export function rfc3161Annotation(signedTimestamp: Buffer): string {
  return `{"SignedRFC3161Timestamp":"${signedTimestamp.toString('base64')}"}`;
}

/** `critical.identity.docker-reference` as cosign writes it: go-containerregistry's `Repository.Name()`. */
export function dockerReferenceOf(registry: string, repository: string): string {
  const host = registry === 'docker.io' ? 'index.docker.io' : registry;
  if (/[\s"]/.test(host + repository)) throw new UserError(`"${registry}/${repository}" is not a repository name`);
  return `${host}/${repository}`;
}

export { signatureTag } from './tags.js';

/** A DSSE envelope as sigstore's protobuf-specs Go struct marshals with encoding/json (cosign's `.att` layer). */
export function dsseEnvelopeJson(env: { payload: Buffer; payloadType: string; signatures: { sig: Buffer; keyid?: string }[] }): Buffer {
  const sigs = env.signatures.map((s) => `{"sig":"${s.sig.toString('base64')}"${s.keyid ? `,"keyid":${goJsonString(s.keyid)}` : ''}}`).join(',');
  return Buffer.from(`{"payload":"${env.payload.toString('base64')}","payloadType":${goJsonString(env.payloadType)},"signatures":[${sigs}]}`, 'utf8');
}

/** One more subject of a statement (e.g. the platform images of an index), with in-toto ResourceDescriptor annotations. */
export interface StatementSubject {
  name?: string;
  digest: string;
  annotations?: Record<string, string>;
}

function statementSubject(s: StatementSubject): string {
  const { algorithm, hex } = parseDigest(s.digest, 'statement digest');
  const annotations = s.annotations && Object.keys(s.annotations).length ? `,"annotations":${goStringMap(s.annotations, false)}` : '';
  return `{${s.name ? `"name":${goJsonString(s.name)},` : ''}"digest":{"${algorithm}":"${hex}"}${annotations}}`;
}

/**
 * An in-toto v1 statement about one image: subject `name` (the repository, as cosign names it)
 * with the image digest, the predicate type URI, and the predicate given as JSON text (kept as it
 * is, so what was attested is what is signed, byte for byte). `more` subjects follow the image's.
 */
export function attestationStatement(digest: string, name: string, predicateType: string, predicateJson: string, more: StatementSubject[] = []): Buffer {
  const subjects = [{ name, digest }, ...more].map(statementSubject).join(',');
  return Buffer.from(`{"_type":"${INTOTO_STATEMENT_V1}","subject":[${subjects}],"predicateType":${goJsonString(predicateType)},"predicate":${predicateJson.trim()}}`, 'utf8');
}
