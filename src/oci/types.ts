import { z } from 'zod';
import { KbError, UserError } from '../errors.js';
import { isDigest } from './digest.js';
import { MediaType } from './mediatypes.js';

/** Runtime schemas for everything kbundle reads from disk or the network (image-spec v1.1). */

const digestString = z.string().refine(isDigest, { message: 'not a valid digest (sha256:<64 hex> or sha512:<128 hex>)' });
const annotations = z.record(z.string(), z.string());

export const PlatformSchema = z.object({
  architecture: z.string().min(1),
  os: z.string().min(1),
  'os.version': z.string().optional(),
  'os.features': z.array(z.string()).optional(),
  variant: z.string().optional(),
  features: z.array(z.string()).optional(),
});
export type Platform = z.infer<typeof PlatformSchema>;

export const DescriptorSchema = z.object({
  mediaType: z.string().min(1),
  digest: digestString,
  size: z.number().int().nonnegative(),
  urls: z.array(z.string()).optional(),
  annotations: annotations.optional(),
  data: z.string().optional(),
  platform: PlatformSchema.optional(),
  artifactType: z.string().optional(),
});
export type Descriptor = z.infer<typeof DescriptorSchema>;

export const ManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.enum([MediaType.OciManifest, MediaType.DockerManifest]).optional(),
  artifactType: z.string().optional(),
  config: DescriptorSchema,
  layers: z.array(DescriptorSchema).max(1000, 'more than 1000 layers'),
  subject: DescriptorSchema.optional(),
  annotations: annotations.optional(),
});
export type Manifest = z.infer<typeof ManifestSchema>;

export const IndexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.enum([MediaType.OciIndex, MediaType.DockerManifestList]).optional(),
  artifactType: z.string().optional(),
  manifests: z.array(DescriptorSchema).max(10000, 'more than 10000 manifests'),
  subject: DescriptorSchema.optional(),
  annotations: annotations.optional(),
});
export type Index = z.infer<typeof IndexSchema>;

export const ImageConfigSchema = z.object({
  created: z.string().optional(),
  author: z.string().optional(),
  architecture: z.string().min(1),
  os: z.string().min(1),
  'os.version': z.string().optional(),
  'os.features': z.array(z.string()).optional(),
  variant: z.string().optional(),
  config: z
    .object({
      User: z.string().optional(),
      Env: z.array(z.string()).nullish(),
      Entrypoint: z.array(z.string()).nullish(),
      Cmd: z.array(z.string()).nullish(),
      WorkingDir: z.string().optional(),
      Labels: z.record(z.string(), z.string()).nullish(),
    })
    .passthrough()
    .optional(),
  rootfs: z.object({
    type: z.literal('layers'),
    diff_ids: z.array(digestString),
  }),
  history: z
    .array(
      z
        .object({
          created: z.string().optional(),
          created_by: z.string().optional(),
          comment: z.string().optional(),
          empty_layer: z.boolean().optional(),
        })
        .passthrough(),
    )
    .optional(),
});
export type ImageConfig = z.infer<typeof ImageConfigSchema>;

export const OciLayoutFileSchema = z.object({ imageLayoutVersion: z.string() });

/** Parse JSON bytes against a schema; the error names the source and the first failing field. */
export function parseJson<T>(schema: z.ZodType<T>, bytes: Buffer | string, what: string): T {
  let raw: unknown;
  try {
    raw = JSON.parse(typeof bytes === 'string' ? bytes : bytes.toString('utf8'));
  } catch (e) {
    throw new UserError(`${what}: not valid JSON (${(e as Error).message})`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const path = issue.path.length ? issue.path.join('.') : '(top level)';
    throw new UserError(`${what}: invalid at ${path}: ${issue.message}`);
  }
  return r.data;
}

export type AnyManifest = { kind: 'manifest'; manifest: Manifest } | { kind: 'index'; index: Index };

const INDEX_TYPES: ReadonlySet<string> = new Set([MediaType.OciIndex, MediaType.DockerManifestList]);
const MANIFEST_TYPES: ReadonlySet<string> = new Set([MediaType.OciManifest, MediaType.DockerManifest]);
const KIND_NAME = { index: 'an image index', manifest: 'an image manifest', schema1: 'a Docker schema 1 manifest' } as const;
const MISMATCH_HINT = 'the registry or the image is corrupt or hostile: the media type that names these bytes must say what they are; nothing was written';

/**
 * The content and the media type naming it disagree (an index descriptor pointing at manifest
 * bytes, a manifest whose `mediaType` field says otherwise, JSON that is both). Every reader of
 * manifests and indexes goes through `parseAnyManifest`, so every command refuses it alike.
 */
export class MediaTypeMismatchError extends KbError {
  constructor(message: string) {
    super('INVALID_INPUT', message, { hint: MISMATCH_HINT });
    this.name = 'MediaTypeMismatchError';
  }
}

/**
 * What JSON says it is by its fields, refusing ambiguous JSON (containers/image
 * ValidateUnambiguousManifestFormat, the image-spec fix for GHSA-77vh-xpmg-72qh): `manifests`
 * makes an index, `config`/`layers` a manifest, `fsLayers`/`history` a schema 1 manifest.
 */
function shapeOf(raw: Record<string, unknown>, what: string): keyof typeof KIND_NAME | undefined {
  const found: Array<keyof typeof KIND_NAME> = [];
  if ('manifests' in raw) found.push('index');
  if ('config' in raw || 'layers' in raw) found.push('manifest');
  if ('fsLayers' in raw) found.push('schema1');
  if (found.length > 1) throw new MediaTypeMismatchError(`${what}: ambiguous content: it has the fields of ${found.map((k) => KIND_NAME[k]).join(' and of ')}`);
  return found[0];
}

/**
 * Parse manifest or index bytes named by `mediaType` (a descriptor's, or a registry's
 * Content-Type; undefined or generic JSON: decided by the content), checking that the media
 * type, the content's own `mediaType` field and its shape agree before the schema is applied.
 */
export function parseAnyManifest(bytes: Buffer, mediaType: string | undefined, what: string): AnyManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new UserError(`${what}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new UserError(`${what}: not a JSON object`);
  const obj = raw as Record<string, unknown>;
  const declared = mediaType && mediaType !== 'application/json' && mediaType !== 'text/plain' ? mediaType : undefined;
  const inner = typeof obj.mediaType === 'string' ? obj.mediaType : undefined;
  const shape = shapeOf(obj, what);
  if (declared && inner !== undefined && inner !== declared) throw new MediaTypeMismatchError(`${what}: media type mismatch: declared as ${declared}, but the content says ${inner}`);
  const mt = declared ?? inner ?? (shape === 'index' ? MediaType.OciIndex : MediaType.OciManifest);
  const kind = INDEX_TYPES.has(mt) ? 'index' : MANIFEST_TYPES.has(mt) ? 'manifest' : undefined;
  if (!kind) throw new KbError('UNSUPPORTED', `${what}: unsupported manifest media type "${mt}"`);
  if (shape !== kind) {
    if (shape) throw new MediaTypeMismatchError(`${what}: media type mismatch: declared as ${mt}, but the content is ${KIND_NAME[shape]}`);
    // Neither shape: let the schema name the missing field.
  }
  return kind === 'index' ? { kind, index: parseJson(IndexSchema, bytes, what) } : { kind, manifest: parseJson(ManifestSchema, bytes, what) };
}

/** An image manifest named by `mediaType` (refused, as by parseAnyManifest, when the bytes are an index). */
export function parseManifest(bytes: Buffer, mediaType: string | undefined, what: string): Manifest {
  const parsed = parseAnyManifest(bytes, mediaType ?? MediaType.OciManifest, what);
  if (parsed.kind !== 'manifest') throw new MediaTypeMismatchError(`${what}: media type mismatch: expected an image manifest, but the content is an image index`);
  return parsed.manifest;
}

/** An image index named by `mediaType` (undefined: an OCI index, as index.json and referrers lists are). */
export function parseIndex(bytes: Buffer, mediaType: string | undefined, what: string): Index {
  const parsed = parseAnyManifest(bytes, mediaType ?? MediaType.OciIndex, what);
  if (parsed.kind !== 'index') throw new MediaTypeMismatchError(`${what}: media type mismatch: expected an image index, but the content is an image manifest`);
  return parsed.index;
}

/** Manifests are small; registries cap them at 4 MiB, so do we. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
