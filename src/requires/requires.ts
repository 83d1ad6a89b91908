/**
 * Compatibility constraints: what a node must be for a bundle or extension to go on it.
 * Talos system extensions say `compatibility: talos: version: ">= 1.9.0"`; a Kairos bundle says
 * more, in bundle.yaml:
 *
 *   requires:
 *     kairos: ">=3.2.0 <4"          # Kairos release (KAIROS_VERSION, else KAIROS_RELEASE), semver range
 *     flavor: [ubuntu, debian]       # KAIROS_FLAVOR
 *     family: [ubuntu]               # KAIROS_FAMILY
 *     arch: [amd64]                  # KAIROS_ARCH
 *     k8s:
 *       distribution: [k3s]          # KAIROS_SOFTWARE_VERSION_PREFIX (k3s, k0s)
 *       version: ">=1.30"            # KAIROS_SOFTWARE_VERSION (v1.33.1+k3s1), semver range
 *     systemd: 254                   # at least this systemd (its libsystemd-shared-N.so)
 *     trustedBoot: false             # KAIROS_TRUSTED_BOOT
 *
 * Stored in the image as the annotation `io.kairos.bundle.requires` (JSON) on the index and every
 * manifest, so a check needs only the manifest. Checked against the node root's
 * /etc/kairos-release (else the KAIROS_* keys of /etc/os-release, as older Kairos wrote them) by
 * `install`, `sysext install` and a rollout's preflight; `rollout` turns what the operator's
 * node labeler exposes into nodeSelector expressions.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import semver from 'semver';
import { z } from 'zod';
import { KbError, UserError } from '../errors.js';
import { fetchBytes, type Target } from '../oci/target.js';
import type { Descriptor } from '../oci/types.js';
import { detectSystemdVersion } from '../kairos/systemd-version.js';

export const REQUIRES_ANNOTATION = 'io.kairos.bundle.requires';

const list = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).transform((v) => (Array.isArray(v) ? v : [v]));
const range = z
  .string()
  .min(1)
  .refine((r) => semver.validRange(r) !== null, { message: 'must be a semver range such as ">=3.2.0 <4" or "^1.30"' });

export const RequiresSchema = z
  .object({
    kairos: range.optional(),
    flavor: list.optional(),
    family: list.optional(),
    arch: list.optional(),
    k8s: z
      .object({
        distribution: z
          .union([z.enum(['k3s', 'k0s']), z.array(z.enum(['k3s', 'k0s'])).min(1)])
          .transform((v) => (Array.isArray(v) ? v : [v]))
          .optional(),
        version: range.optional(),
      })
      .strict()
      .optional(),
    systemd: z.number().int().min(200).max(9999).optional(),
    trustedBoot: z.boolean().optional(),
  })
  .strict();

export type Requires = z.infer<typeof RequiresSchema>;

/** Canonical JSON (keys in schema order, nothing empty): what goes into the annotation. */
export function requiresJson(r: Requires): string {
  return JSON.stringify(RequiresSchema.parse(r));
}

export function parseRequires(raw: unknown, what: string): Requires {
  const r = RequiresSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    const field = ['requires', ...i.path].join('.');
    throw new UserError(`${what}: ${field}: ${i.code === 'unrecognized_keys' ? `unknown field(s) ${i.keys.map((k) => `"${k}"`).join(', ')}` : i.message}`);
  }
  return r.data;
}

/** The constraints an image carries, from its (index or manifest) annotations; undefined if none. */
export function requiresFromAnnotations(annotations: Record<string, string> | undefined, what: string): Requires | undefined {
  const text = annotations?.[REQUIRES_ANNOTATION];
  if (text === undefined) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new KbError('INVALID_INPUT', `${what}: annotation ${REQUIRES_ANNOTATION} is not JSON`);
  }
  return parseRequires(raw, `${what} (annotation ${REQUIRES_ANNOTATION})`);
}

/** The constraints of an image: the platform manifest's annotation, else the index's. */
export async function imageRequires(target: Target, top: Descriptor, manifest: Descriptor, what: string): Promise<Requires | undefined> {
  const annotationsOf = async (d: Descriptor) => (JSON.parse((await fetchBytes(target, d)).toString('utf8')) as { annotations?: Record<string, string> }).annotations;
  const own = requiresFromAnnotations(await annotationsOf(manifest), what);
  if (own || top.digest === manifest.digest) return own;
  return requiresFromAnnotations(await annotationsOf(top), what);
}

// ---- the node -------------------------------------------------------------------------------

export interface NodeFacts {
  /** KAIROS_* keys of the root (kairos-release, else os-release); empty on a non-Kairos root. */
  release: Record<string, string>;
  releaseFile?: string;
  systemd?: number;
}

/** An env file the way the operator's labeler reads it (KEY=VALUE, quotes trimmed, # comments). */
export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const i = line.indexOf('=');
    if (i < 0) continue;
    out[line.slice(0, i)] = line.slice(i + 1).replace(/^["']+|["']+$/g, '');
  }
  return out;
}

const MAX_RELEASE_BYTES = 64 * 1024;

async function readSmall(path: string): Promise<string | undefined> {
  try {
    const text = await readFile(path, 'utf8');
    return text.length > MAX_RELEASE_BYTES ? undefined : text;
  } catch {
    return undefined;
  }
}

export async function readNodeFacts(root: string): Promise<NodeFacts> {
  const systemd = await detectSystemdVersion(root);
  for (const file of ['etc/kairos-release', 'etc/os-release', 'usr/lib/os-release']) {
    const text = await readSmall(join(root, file));
    if (text === undefined) continue;
    const kairos = Object.fromEntries(Object.entries(parseEnvFile(text)).filter(([k]) => k.startsWith('KAIROS_')));
    if (Object.keys(kairos).length) return { release: kairos, releaseFile: `/${file}`, systemd };
  }
  return { release: {}, systemd };
}

function version(v: string | undefined): string | undefined {
  if (!v) return undefined;
  return semver.valid(semver.clean(v, { loose: true }) ?? '') ?? semver.coerce(v)?.version ?? undefined;
}

/**
 * Each constraint the node does not meet, naming it and the node's value ("requires.flavor
 * [ubuntu]: the node's KAIROS_FLAVOR is alpine"). Empty: the node meets them all.
 */
export function unmetRequires(r: Requires, node: NodeFacts): string[] {
  const rel = node.release;
  const src = node.releaseFile ?? '/etc/kairos-release';
  const out: string[] = [];
  const value = (key: string) => (rel[key] ? `${key}=${rel[key]}` : `no ${key} in ${src}`);
  const oneOf = (field: string, allowed: string[] | undefined, key: string) => {
    if (allowed && !allowed.includes(rel[key] ?? '')) out.push(`requires.${field} [${allowed.join(', ')}]: the node has ${value(key)}`);
  };
  if (r.kairos) {
    const key = rel.KAIROS_VERSION ? 'KAIROS_VERSION' : 'KAIROS_RELEASE';
    const v = version(rel[key]);
    if (!v || !semver.satisfies(v, r.kairos)) out.push(`requires.kairos "${r.kairos}": the node has ${value(key)}`);
  }
  oneOf('flavor', r.flavor, 'KAIROS_FLAVOR');
  oneOf('family', r.family, 'KAIROS_FAMILY');
  oneOf('arch', r.arch, 'KAIROS_ARCH');
  oneOf('k8s.distribution', r.k8s?.distribution, 'KAIROS_SOFTWARE_VERSION_PREFIX');
  if (r.k8s?.version) {
    const v = version(rel.KAIROS_SOFTWARE_VERSION);
    if (!v || !semver.satisfies(v, r.k8s.version)) out.push(`requires.k8s.version "${r.k8s.version}": the node has ${value('KAIROS_SOFTWARE_VERSION')}`);
  }
  if (r.systemd !== undefined && !(node.systemd !== undefined && node.systemd >= r.systemd))
    out.push(`requires.systemd >= ${r.systemd}: the node has ${node.systemd === undefined ? 'no libsystemd-shared-N.so (systemd version unknown)' : `systemd ${node.systemd}`}`);
  if (r.trustedBoot !== undefined && (rel.KAIROS_TRUSTED_BOOT === 'true') !== r.trustedBoot) out.push(`requires.trustedBoot ${r.trustedBoot}: the node has ${value('KAIROS_TRUSTED_BOOT')}`);
  return out;
}

/**
 * Refuse (REFUSED, naming every unmet constraint) unless the node meets `r`; with `ignore` only
 * warn, and return what was overridden (the install record keeps it).
 */
export async function enforceRequires(r: Requires | undefined, root: string, what: string, opts: { ignore?: boolean; onWarning?: (m: string) => void } = {}): Promise<string[]> {
  if (!r) return [];
  const unmet = unmetRequires(r, await readNodeFacts(root));
  if (!unmet.length) return [];
  if (opts.ignore) {
    opts.onWarning?.(`${what}: --ignore-requires: installing although the node does not meet: ${unmet.join('; ')}`);
    return unmet;
  }
  throw new KbError('REFUSED', `${what}: this node does not meet the image's requires:\n  - ${unmet.join('\n  - ')}`, {
    hint: 'nothing was written; install a build made for this node, or pass --ignore-requires to install anyway',
  });
}

// ---- node labels (the operator's labeler) ---------------------------------------------------

/** The labeler's sanitizeLabelValue (cmd/node-labeler/labeler.go). */
export function sanitizeLabelValue(s: string): string {
  let v = s.replace(/[^a-zA-Z0-9\-_.]/g, '-').replace(/^[-_.]+|[-_.]+$/g, '');
  if (v.length > 63) v = v.slice(0, 63).replace(/^[-_.]+|[-_.]+$/g, '');
  return v;
}
