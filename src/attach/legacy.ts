/**
 * cosign's "attached" images: the `sha256-<hex>.sig` (signatures) and `sha256-<hex>.att`
 * (attestations) tags each hold an OCI image whose layers are the signed payloads, one per
 * signature, with the signature material in layer annotations (cosign pkg/oci/mutate
 * AppendSignatures on pkg/oci/empty; at most 1000 layers). Appending reads what the tag holds,
 * adds one layer and writes config, manifest and tag anew.
 */
import { errorMessage, KbError, UserError } from '../errors.js';
import { digestOf } from '../oci/digest.js';
import { isIndexMediaType, isManifestMediaType, MediaType } from '../oci/mediatypes.js';
import { fetchBytes, pushTagged, tryResolveWithBytes, type Target } from '../oci/target.js';
import { parseManifest, type Descriptor } from '../oci/types.js';
import { legacySignatureConfig, legacySignatureManifest } from './formats.js';

/** cosign refuses to grow an attached image past this many layers (pkg/oci/mutate maxLayers). */
export const MAX_ATTACHED_LAYERS = 1000;

export interface AppendOptions {
  /** An existing layer that already is this one (nothing is written then). */
  duplicate?: (layer: Descriptor) => boolean;
  /** Existing layers to drop (cosign `attest --replace`: same predicate type). */
  drop?: (layer: Descriptor) => boolean;
}

/** The layers `tag` holds now (none when the tag is absent); a tag holding anything else is refused. */
export async function attachedLayers(target: Target, tag: string): Promise<Descriptor[]> {
  const got = await tryResolveWithBytes(target, tag);
  if (!got) return [];
  const existing = got.desc;
  if (!isManifestMediaType(existing.mediaType) || isIndexMediaType(existing.mediaType)) {
    throw new KbError('CONFLICT', `${target.name}:${tag} holds ${existing.mediaType}, not a cosign signature or attestation manifest; refusing to replace it`, {
      hint: `delete the tag ${tag} if it is garbage, then try again`,
    });
  }
  try {
    return parseManifest(got.bytes ?? (await fetchBytes(target, existing)), existing.mediaType, `${target.name}:${tag}`).layers;
  } catch (e) {
    throw new KbError('CONFLICT', `${target.name}:${tag}: the existing manifest is unusable (${errorMessage(e)}); refusing to replace it`, {
      hint: `delete the tag ${tag} if it is garbage, then try again`,
      cause: e,
    });
  }
}

export interface NewLayer {
  payload: Buffer;
  mediaType: string;
  annotations: Record<string, string>;
}

/**
 * Append one layer to the attached image at `tag`. What the tag holds is read (and refused if it
 * is not usable) before `make` signs anything. Returns false when `duplicate` matched a layer.
 */
export async function appendAttachedLayer(target: Target, tag: string, make: () => Promise<NewLayer>, opts: AppendOptions = {}): Promise<boolean> {
  let layers = await attachedLayers(target, tag);
  const { payload, mediaType, annotations } = await make();
  if (opts.duplicate && layers.some(opts.duplicate)) return false;
  if (opts.drop) layers = layers.filter((l) => !opts.drop!(l));
  if (layers.length >= MAX_ATTACHED_LAYERS) throw new UserError(`${target.name}:${tag} already holds ${layers.length} layers; cosign and kbundle refuse more than ${MAX_ATTACHED_LAYERS}`);
  const layer: Descriptor = { mediaType, digest: digestOf(payload), size: payload.length, annotations };
  const all = [...layers, layer];
  const config = legacySignatureConfig(all.map((l) => l.digest));
  const configDesc: Descriptor = { mediaType: MediaType.OciConfig, digest: digestOf(config), size: config.length };
  await target.push(layer, payload);
  await target.push(configDesc, config);
  const manifest = legacySignatureManifest(configDesc, all);
  const desc: Descriptor = { mediaType: MediaType.OciManifest, digest: digestOf(manifest), size: manifest.length };
  await pushTagged(target, desc, manifest, tag);
  return true;
}
