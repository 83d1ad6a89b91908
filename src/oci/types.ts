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

/** Decide manifest vs index from the declared media type, or the shape when none is declared. */
export function parseAnyManifest(bytes: Buffer, mediaType: string | undefined, what: string): AnyManifest {
  let mt = mediaType;
  if (!mt || mt === 'application/json' || mt === 'text/plain') {
    try {
      const raw = JSON.parse(bytes.toString('utf8')) as { mediaType?: string; manifests?: unknown };
      mt = raw.mediaType ?? (Array.isArray(raw.manifests) ? MediaType.OciIndex : MediaType.OciManifest);
    } catch (e) {
      throw new UserError(`${what}: not valid JSON (${(e as Error).message})`);
    }
  }
  if (mt === MediaType.OciIndex || mt === MediaType.DockerManifestList) {
    return { kind: 'index', index: parseJson(IndexSchema, bytes, what) };
  }
  if (mt === MediaType.OciManifest || mt === MediaType.DockerManifest) {
    return { kind: 'manifest', manifest: parseJson(ManifestSchema, bytes, what) };
  }
  throw new KbError('UNSUPPORTED', `${what}: unsupported manifest media type "${mt}"`);
}

/** Manifests are small; registries cap them at 4 MiB, so do we. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
