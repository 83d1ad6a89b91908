/** Media types kbundle reads and writes (OCI image-spec v1.1 and Docker schema2). */
export const MediaType = {
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OciEmpty: 'application/vnd.oci.empty.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
} as const;

export const INDEX_MEDIA_TYPES: ReadonlySet<string> = new Set([MediaType.OciIndex, MediaType.DockerManifestList]);
export const MANIFEST_MEDIA_TYPES: ReadonlySet<string> = new Set([MediaType.OciManifest, MediaType.DockerManifest]);

export function isIndexMediaType(mt: string | undefined): boolean {
  return mt !== undefined && INDEX_MEDIA_TYPES.has(mt);
}
export function isManifestMediaType(mt: string | undefined): boolean {
  return mt !== undefined && MANIFEST_MEDIA_TYPES.has(mt);
}

/** Everything a registry may answer for a manifest GET; registry 2.8 needs the stored type named. */
export const MANIFEST_ACCEPT = [MediaType.OciManifest, MediaType.OciIndex, MediaType.DockerManifest, MediaType.DockerManifestList].join(', ');

export type LayerCompression = 'gzip' | 'zstd' | 'none';

export function layerCompression(mediaType: string): LayerCompression {
  if (mediaType.endsWith('+gzip') || mediaType.endsWith('.tar.gzip')) return 'gzip';
  if (mediaType.endsWith('+zstd')) return 'zstd';
  return 'none';
}

/** Standard pre-defined annotation keys (image-spec annotations.md). */
export const Annotation = {
  Created: 'org.opencontainers.image.created',
  Authors: 'org.opencontainers.image.authors',
  Url: 'org.opencontainers.image.url',
  Documentation: 'org.opencontainers.image.documentation',
  Source: 'org.opencontainers.image.source',
  Version: 'org.opencontainers.image.version',
  Revision: 'org.opencontainers.image.revision',
  Vendor: 'org.opencontainers.image.vendor',
  Licenses: 'org.opencontainers.image.licenses',
  RefName: 'org.opencontainers.image.ref.name',
  Title: 'org.opencontainers.image.title',
  Description: 'org.opencontainers.image.description',
  BaseName: 'org.opencontainers.image.base.name',
  BundleType: 'io.kairos.bundle.type',
} as const;
