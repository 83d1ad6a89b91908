import { copyAttachments, type CopiedAttachment } from '../attach/copy.js';
import { UserError } from '../errors.js';
import { isDigest } from '../oci/digest.js';
import { GraphCopier, isManifestDescriptor, type CopyGraphOptions, type CopyStats } from '../oci/copy-graph.js';
import { isIndexMediaType } from '../oci/mediatypes.js';
import { formatPlatform, hostPlatform, selectPlatform } from '../oci/platform.js';
import { fetchBytes, resolveAndRead, type Target } from '../oci/target.js';
import { parseAnyManifest, type Descriptor, type Platform } from '../oci/types.js';

export type { CopyHooks } from '../oci/copy-graph.js';

export interface CopyOptions extends Omit<CopyGraphOptions, 'rootBytes'> {
  /** Copy only this platform's manifest out of an index (the copy's root becomes that manifest). */
  platform?: Platform;
  /** With no `platform`: copy the whole index (default true). False picks the host platform. */
  allPlatforms?: boolean;
  /**
   * Also copy what is attached to the copied manifests (the root, and an index's manifests when the
   * whole index is copied): cosign's `sha256-<hex>.sig`/`.att`/`.sbom` tags and OCI referrers.
   */
  attached?: boolean;
}

export interface CopyResult extends CopyStats {
  /** What was tagged at the destination: the source root, or the chosen platform's manifest. */
  root: Descriptor;
  /** Attached artifacts copied along (`attached`): legacy tags by name, referrers by digest. */
  attached: CopiedAttachment[];
  /** Attached artifacts that could not be looked up (the image itself was copied). */
  warnings: string[];
}

/** The root to copy: `srcRef`, or one platform's manifest out of the index it names. */
async function selectRoot(src: Target, srcRef: string, opts: CopyOptions): Promise<{ root: Descriptor; bytes: Buffer; platform?: Platform }> {
  const { desc: root, bytes } = await resolveAndRead(src, srcRef);
  const platform = opts.platform ?? (opts.allPlatforms === false ? hostPlatform() : undefined);
  if (!platform || !isIndexMediaType(root.mediaType)) return { root, bytes, platform };
  const parsed = parseAnyManifest(bytes, root.mediaType, `${src.name}@${root.digest}`);
  if (parsed.kind !== 'index') throw new UserError(`${src.name}@${root.digest}: declared as an index but is a manifest`);
  const chosen = selectPlatform(parsed.index.manifests, platform, `${src.name}:${srcRef || root.digest}`);
  const picked: Descriptor = { mediaType: chosen.mediaType, digest: chosen.digest, size: chosen.size, platform: chosen.platform };
  return { root: picked, bytes: await fetchBytes(src, picked), platform };
}

/** The manifests whose attachments travel along: the root, and the manifests of an index copied whole. */
function attachmentSubjects(src: Target, root: Descriptor, bytes: Buffer): Descriptor[] {
  const parsed = parseAnyManifest(bytes, root.mediaType, `${src.name}@${root.digest}`);
  return parsed.kind === 'index' ? [root, ...parsed.index.manifests.filter(isManifestDescriptor)] : [root];
}

/**
 * Copy an image (oras-go Copy = resolve + CopyGraph + Tag, then ExtendedCopy's attachments step):
 * the tag is written after the whole graph, so a failed copy never leaves a tag dangling.
 */
export async function copyImage(src: Target, srcRef: string, dst: Target, dstRef: string, opts: CopyOptions = {}): Promise<CopyResult> {
  const { root, bytes, platform } = await selectRoot(src, srcRef, opts);
  if (dstRef && isDigest(dstRef) && dstRef !== root.digest) {
    throw new UserError(
      `${dst.name}@${dstRef}: the image being copied has digest ${root.digest}${platform ? ` (platform ${formatPlatform(platform)})` : ''}`,
      'a destination pinned by digest must name exactly the content copied; use a tag instead',
    );
  }
  const copier = new GraphCopier(src, dst, opts);
  const tag = dstRef && !isDigest(dstRef) ? dstRef : '';
  // A registry takes the root under its tag in the same PUT; other stores are tagged after.
  if (!(await copier.copy(root, bytes, tag))) await dst.tag(root, tag);
  const extra = opts.attached ? await copyAttachments(copier, attachmentSubjects(src, root, bytes)) : { attached: [], warnings: [] };
  return { root, ...copier.stats, ...extra };
}
