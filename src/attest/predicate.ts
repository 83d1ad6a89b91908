/**
 * Predicate types as cosign names them (`--type`, cmd/cosign/cli/options/predicate.go
 * PredicateTypeMap) and the checks that a predicate is what its type says (at attest time, and
 * again on verification: a statement whose predicate does not match its type is refused).
 */
import { z } from 'zod';
import { UserError } from '../errors.js';

export const PredicateTypes = {
  custom: 'https://cosign.sigstore.dev/attestation/v1',
  slsaprovenance: 'https://slsa.dev/provenance/v0.2',
  slsaprovenance02: 'https://slsa.dev/provenance/v0.2',
  slsaprovenance1: 'https://slsa.dev/provenance/v1',
  spdxjson: 'https://spdx.dev/Document',
  cyclonedx: 'https://cyclonedx.org/bom',
  vuln: 'https://cosign.sigstore.dev/attestation/vuln/v1',
  openvex: 'https://openvex.dev/ns',
} as const;

export type PredicateTypeName = keyof typeof PredicateTypes;

/** Names that cosign knows but kbundle does not write, with what to use instead. */
const UNSUPPORTED: Record<string, string> = {
  spdx: 'SPDX tag-value is not JSON; use --type spdxjson with an SPDX JSON document (kbundle build --sbom spdx writes one)',
  link: 'in-toto link predicates are not supported; use --type slsaprovenance1',
};

/** Predicates larger than this are refused (a statement travels base64 inside a bundle). */
export const MAX_PREDICATE_BYTES = 8 << 20;

/** `--type`: a cosign name or a predicate type URI → the URI. */
export function predicateTypeUri(type: string): string {
  if (Object.hasOwn(PredicateTypes, type)) return PredicateTypes[type as PredicateTypeName];
  if (UNSUPPORTED[type]) throw new UserError(`--type ${type}: ${UNSUPPORTED[type]}`);
  let url: URL | undefined;
  try {
    url = new URL(type);
  } catch {
    /* not a URI */
  }
  if (!url || !/^[a-z][a-z0-9+.-]*:$/.test(url.protocol) || /\s/.test(type) || type.length > 512) {
    throw new UserError(`--type: unknown predicate type "${type.slice(0, 100)}"`, `use one of ${Object.keys(PredicateTypes).join(', ')}, or a predicate type URI`);
  }
  return type;
}

const nonEmpty = z.string().min(1);
const obj = z.record(z.string(), z.unknown());

/** The fields each known predicate type must have (its spec's required fields). */
const SHAPES: Record<string, z.ZodTypeAny> = {
  [PredicateTypes.slsaprovenance]: z.object({ builder: z.object({ id: nonEmpty }).passthrough(), buildType: nonEmpty }).passthrough(),
  [PredicateTypes.slsaprovenance1]: z
    .object({
      buildDefinition: z.object({ buildType: nonEmpty, externalParameters: obj }).passthrough(),
      runDetails: z.object({ builder: z.object({ id: nonEmpty }).passthrough() }).passthrough(),
    })
    .passthrough(),
  [PredicateTypes.spdxjson]: z.object({ spdxVersion: z.string().regex(/^SPDX-2\.\d+$/, 'must be SPDX-2.x'), SPDXID: z.literal('SPDXRef-DOCUMENT'), name: z.string(), creationInfo: obj }).passthrough(),
  [PredicateTypes.cyclonedx]: z.object({ bomFormat: z.literal('CycloneDX'), specVersion: z.string().regex(/^1\.\d+$/, 'must be 1.x') }).passthrough(),
  [PredicateTypes.vuln]: z
    .object({
      invocation: obj,
      scanner: z.object({ uri: nonEmpty, version: z.string() }).passthrough(),
      metadata: z.object({ scanStartedOn: nonEmpty, scanFinishedOn: nonEmpty }).passthrough(),
    })
    .passthrough(),
  [PredicateTypes.openvex]: z.object({ '@context': z.string().startsWith('https://openvex.dev/ns'), statements: z.array(obj) }).passthrough(),
  [PredicateTypes.custom]: z.object({ Data: z.string(), Timestamp: z.string() }).passthrough(),
};

const NAMES: Record<string, string> = Object.fromEntries(Object.entries(PredicateTypes).map(([k, v]) => [v, k]));

/** A short name for messages: the cosign name of a known URI, else the URI. */
export function predicateTypeName(uri: string): string {
  return NAMES[uri] ?? uri;
}

/**
 * Why `predicate` is not a predicate of type `uri`, or undefined when it is. Unknown types need a
 * JSON object (as cosign requires for a custom type URI).
 */
export function predicateProblem(uri: string, predicate: unknown): string | undefined {
  const shape = SHAPES[uri] ?? obj;
  const r = shape.safeParse(predicate);
  if (r.success) return undefined;
  const i = r.error.issues[0]!;
  return `${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`;
}

export interface Predicate {
  /** The predicate type URI. */
  type: string;
  /** JSON text of the predicate as it goes into the statement. */
  json: string;
}

/**
 * The predicate of `cosign attest --predicate FILE --type T`: the file must be JSON and match the
 * type; `custom` wraps the file's text as cosign does (`{"Data": text, "Timestamp": now}`).
 */
export function predicateFromFile(text: string, type: string, file: string, now: Date): Predicate {
  const uri = predicateTypeUri(type);
  if (Buffer.byteLength(text) > MAX_PREDICATE_BYTES) throw new UserError(`${file}: over ${MAX_PREDICATE_BYTES} bytes; too large for a predicate`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: the predicate is not JSON (${(e as Error).message})`, 'attest a JSON document: an SBOM, a provenance, a scan result');
  }
  if (uri === PredicateTypes.custom) {
    const json = JSON.stringify({ Data: text, Timestamp: now.toISOString().replace(/\.\d{3}Z$/, 'Z') });
    return { type: uri, json };
  }
  const problem = predicateProblem(uri, parsed);
  if (problem) throw new UserError(`${file}: not a ${predicateTypeName(uri)} predicate (${uri}): ${problem}`, 'check --type, or the file');
  return { type: uri, json: text };
}

/** The builder id of a SLSA provenance predicate (v1: runDetails.builder.id, v0.2: builder.id). */
export function provenanceBuilderId(uri: string, predicate: unknown): string | undefined {
  const p = predicate as { runDetails?: { builder?: { id?: unknown } }; builder?: { id?: unknown } } | undefined;
  const id = uri === PredicateTypes.slsaprovenance1 ? p?.runDetails?.builder?.id : uri === PredicateTypes.slsaprovenance ? p?.builder?.id : undefined;
  return typeof id === 'string' ? id : undefined;
}
