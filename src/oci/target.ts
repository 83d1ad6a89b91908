import type { Readable } from 'node:stream';
import { isKbError, UserError } from '../errors.js';
import { readAllCapped } from './digest.js';
import { MAX_MANIFEST_BYTES, type Descriptor } from './types.js';

/**
 * Content-addressed storage plus names (oras-go `Target` = Storage + TagResolver). The OCI layout
 * directory and a registry repository implement it (archives are read and written through a
 * temporary layout), so build → push → pull → install is one graph copy.
 *
 * What a store can do beyond this is offered through the optional interfaces below (oras-go
 * `registry.Mounter`, `registry.ReferrerLister`), found with their type guards — callers ask for a
 * capability, never for a class or a transport name.
 */
export interface Target {
  /** Human-readable location for messages, e.g. `oci:out/oci` or `127.0.0.1:5000/foo`. */
  readonly name: string;
  exists(desc: Descriptor): Promise<boolean>;
  /** Bytes of a blob or manifest; the stream errors if they do not match `desc`. */
  fetch(desc: Descriptor): Promise<Readable>;
  /** Store content that must match `desc` (digest and size); nothing is kept if it does not. */
  push(desc: Descriptor, content: Readable | Buffer): Promise<void>;
  /** Tag name or digest → descriptor of a manifest or index. Throws KbError NOT_FOUND when absent. */
  resolve(reference: string): Promise<Descriptor>;
  /** Point `reference` (a tag) at an already stored manifest or index. */
  tag(desc: Descriptor, reference: string): Promise<void>;
}

/** A store that can link a blob it holds elsewhere instead of receiving its bytes (cross-repository mount). */
export interface Mounter {
  /** Link `desc` from `fromRepository`; false when the store would not (then upload instead). */
  mount(desc: Descriptor, fromRepository: string): Promise<boolean>;
  /** The repository of `source` when its blobs can be mounted here (same registry, other repository). */
  mountSourceOf(source: Target): string | undefined;
}

/** A store that indexes referrers itself (the OCI 1.1 referrers API), used before the fallback tag. */
export interface ReferrersLister {
  /** Referrers of `subject` from the store's own index; undefined when it has none (use the `sha256-<hex>` tag). */
  referrers(subject: Descriptor, artifactType?: string): Promise<Descriptor[] | undefined>;
  /** Push a manifest that has a `subject`; true when the store indexed it as a referrer itself. */
  pushReferrer(desc: Descriptor, manifestBytes: Buffer): Promise<boolean>;
}

/** A store that returns a manifest's descriptor and bytes in one request (tags resolved without a HEAD). */
export interface ManifestFetcher {
  resolveWithBytes(reference: string): Promise<{ desc: Descriptor; bytes: Buffer }>;
}

/** A store that keeps a manifest under a tag in one request (oras-go `registry.ReferencePusher`), instead of push, then tag. */
export interface ReferencePusher {
  /** Store the manifest `desc` (its bytes must match) and point the tag `reference` at it. */
  pushReference(desc: Descriptor, bytes: Buffer, reference: string): Promise<void>;
}

export function pushesReferences(t: Target): t is Target & ReferencePusher {
  return typeof (t as Partial<ReferencePusher>).pushReference === 'function';
}

/** Store the manifest `desc` and point the tag `tag` at it: one request where the store can (a registry), else push, then tag. */
export async function pushTagged(target: Target, desc: Descriptor, bytes: Buffer, tag: string): Promise<void> {
  if (pushesReferences(target)) return target.pushReference(desc, bytes, tag);
  await target.push(desc, bytes);
  await target.tag(desc, tag);
}

export function canMount(t: Target): t is Target & Mounter {
  return typeof (t as Partial<Mounter>).mount === 'function' && typeof (t as Partial<Mounter>).mountSourceOf === 'function';
}

export function listsReferrers(t: Target): t is Target & ReferrersLister {
  return typeof (t as Partial<ReferrersLister>).referrers === 'function' && typeof (t as Partial<ReferrersLister>).pushReferrer === 'function';
}

export function fetchesManifests(t: Target): t is Target & ManifestFetcher {
  return typeof (t as Partial<ManifestFetcher>).resolveWithBytes === 'function';
}

/**
 * What an image location can hold, asked before writing to it (containers/image
 * `ImageDestination.SupportsSignatures()` and friends).
 */
export interface ImageCapabilities {
  /** Holds an index of several platforms (a docker archive holds one image). */
  readonly multiPlatform: boolean;
  /** Keeps signatures, attestations and SBOMs next to the image (cosign tags, referrers). */
  readonly signatures: boolean;
  /** Opened where it lies, so signing writes into it (archives are unpacked into a temporary copy). */
  readonly inPlace: boolean;
  /** A registry: opening it needs a registry client. */
  readonly remote: boolean;
}

/** Read a small blob (manifest, index, config) whole, refusing one declared or found over `limit`. */
export async function fetchBytes(target: Target, desc: Descriptor, limit = MAX_MANIFEST_BYTES): Promise<Buffer> {
  if (desc.size > limit) throw new UserError(`${target.name}: ${desc.digest}: ${desc.size} bytes, over the ${limit}-byte limit`, 'refusing to read it into memory');
  const s = await target.fetch(desc);
  return readAllCapped(s, limit, `${target.name}: ${desc.digest}`);
}

/**
 * Resolve `reference` and read the manifest it names: one GET where the store offers it (a
 * registry: no HEAD first, a round trip less per command that reads the manifest anyway), else
 * resolve then read. The bytes are checked against the descriptor either way.
 */
export async function resolveAndRead(target: Target, reference: string): Promise<{ desc: Descriptor; bytes: Buffer }> {
  if (fetchesManifests(target)) return target.resolveWithBytes(reference);
  const desc = await target.resolve(reference);
  return { desc, bytes: await fetchBytes(target, desc) };
}

/**
 * Resolve a tag that may be missing (an attachment's tag): undefined when nothing is under it
 * (KbError NOT_FOUND); with the manifest's bytes when the store returns them with the answer (one
 * GET, as resolveAndRead), else only the descriptor, for the caller to check before reading.
 */
export async function tryResolveWithBytes(target: Target, reference: string): Promise<{ desc: Descriptor; bytes?: Buffer } | undefined> {
  if (!fetchesManifests(target)) {
    const desc = await tryResolve(target, reference);
    return desc && { desc };
  }
  try {
    return await target.resolveWithBytes(reference);
  } catch (e) {
    if (isKbError(e, 'NOT_FOUND')) return undefined;
    throw e;
  }
}

/** Resolve a tag; undefined when nothing is under it (KbError NOT_FOUND). Other failures propagate. */
export async function tryResolve(target: Target, reference: string): Promise<Descriptor | undefined> {
  try {
    return await target.resolve(reference);
  } catch (e) {
    if (isKbError(e, 'NOT_FOUND')) return undefined;
    throw e;
  }
}
