/**
 * SPDX 2.3 JSON of one image inventory. The image is the described package; it CONTAINS its
 * layers, each layer CONTAINS its files (SHA-1, which SPDX 2.3 requires, and SHA-256). A file
 * from a `url:` download is EXPANDED_FROM_ARCHIVE (extract:) or a COPY_OF the download package,
 * which carries the source URL, the pinned SHA-256 and the declared licence. A Kubernetes manifest
 * file DEPENDS_ON the container images and Helm charts it references.
 * Reproducible: the namespace derives from the manifest digest, the date from SOURCE_DATE_EPOCH.
 */
import { dockerPurl, downloadName, epochTime, hexOf, ociPurl, parseImageRef, stableUuid, TOOL_NAME, TOOL_VERSION, uniqueCharts, uniqueInOrder } from './common.js';
import type { ImageInventory } from './inventory.js';

const NOASSERTION = 'NOASSERTION';

interface Relationship {
  spdxElementId: string;
  relationshipType: string;
  relatedSpdxElement: string;
}

/** SPDX ids allow letters, digits, `.` and `-`. */
function id(kind: string, n: number): string {
  return `SPDXRef-${kind}-${n}`;
}

/** A URL SPDX accepts as downloadLocation, or NOASSERTION. */
function location(url: string | undefined): string {
  return url && /^(https?|ftp|oci|git\+[a-z]+):\/\//.test(url) ? url : NOASSERTION;
}

export function spdxDocument(inv: ImageInventory): Record<string, unknown> {
  const rels: Relationship[] = [];
  const rel = (a: string, type: string, b: string) => rels.push({ spdxElementId: a, relationshipType: type, relatedSpdxElement: b });
  const imageId = 'SPDXRef-Image';
  const docName = `${inv.name}-${inv.version}-${inv.platform.replace(/\//g, '-')}`;
  const packages: Record<string, unknown>[] = [];

  const image: Record<string, unknown> = {
    name: inv.name,
    SPDXID: imageId,
    versionInfo: inv.version,
    downloadLocation: NOASSERTION,
    filesAnalyzed: false,
    checksums: [{ algorithm: 'SHA256', checksumValue: hexOf(inv.manifest.digest) }],
    licenseConcluded: NOASSERTION,
    licenseDeclared: inv.license ?? NOASSERTION,
    copyrightText: NOASSERTION,
    primaryPackagePurpose: 'CONTAINER',
    externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: ociPurl(inv.name, inv.manifest.digest, inv.platform) }],
    builtDate: epochTime(inv.epoch),
  };
  if (inv.source) image.homepage = location(inv.source);
  if (inv.description) image.description = inv.description;
  const notes = [`platform ${inv.platform}`, `manifest ${inv.manifest.digest}`, `config ${inv.config}`];
  if (inv.type) notes.push(`bundle type ${inv.type}`);
  if (inv.revision) notes.push(`revision ${inv.revision}`);
  image.comment = notes.join('; ');
  packages.push(image);
  rel('SPDXRef-DOCUMENT', 'DESCRIBES', imageId);

  for (const l of inv.layers) {
    packages.push({
      name: `${inv.name} layer ${l.index}`,
      SPDXID: id('Layer', l.index),
      versionInfo: l.diffId,
      downloadLocation: NOASSERTION,
      filesAnalyzed: false,
      checksums: [{ algorithm: 'SHA256', checksumValue: hexOf(l.digest) }],
      licenseConcluded: NOASSERTION,
      licenseDeclared: NOASSERTION,
      copyrightText: NOASSERTION,
      primaryPackagePurpose: 'ARCHIVE',
      comment: `OCI layer ${l.digest} (${l.mediaType}, ${l.size} bytes), diff ID ${l.diffId}${l.createdBy ? `, created by: ${l.createdBy}` : ''}`,
    });
    rel(imageId, 'CONTAINS', id('Layer', l.index));
  }

  const files = inv.files.map((f, i) => ({
    fileName: `./${f.path}`,
    SPDXID: id('File', i),
    checksums: [
      { algorithm: 'SHA1', checksumValue: f.sha1 },
      { algorithm: 'SHA256', checksumValue: f.sha256 },
    ],
    licenseConcluded: NOASSERTION,
    copyrightText: NOASSERTION,
    comment: `layer ${inv.layers[f.layer]!.digest}, mode ${f.mode.toString(8).padStart(4, '0')}, ${f.size} bytes`,
  }));
  const fileIds = new Map(inv.files.map((f, i) => [f.path, id('File', i)]));
  inv.files.forEach((f, i) => rel(id('Layer', f.layer), 'CONTAINS', id('File', i)));

  inv.downloads.forEach((d, i) => {
    packages.push({
      name: downloadName(d.url),
      SPDXID: id('Download', i),
      downloadLocation: location(d.url),
      filesAnalyzed: false,
      checksums: [{ algorithm: 'SHA256', checksumValue: d.sha256 }],
      licenseConcluded: NOASSERTION,
      licenseDeclared: d.license ?? NOASSERTION,
      copyrightText: NOASSERTION,
      primaryPackagePurpose: d.extract ? 'ARCHIVE' : 'FILE',
      comment: d.extract ? `pinned download; /${d.path} is its member "${d.extract}"` : `pinned download; installed as /${d.path}`,
    });
    const file = fileIds.get(d.path);
    if (file) rel(file, d.extract ? 'EXPANDED_FROM_ARCHIVE' : 'COPY_OF', id('Download', i));
  });

  const images = uniqueInOrder(inv.manifests.flatMap((m) => m.images));
  images.forEach((ref, i) => {
    const r = parseImageRef(ref);
    const purl = dockerPurl(ref);
    packages.push({
      name: ref,
      SPDXID: id('ContainerImage', i),
      ...(r.digest || r.tag ? { versionInfo: r.digest ?? r.tag } : {}),
      downloadLocation: NOASSERTION,
      filesAnalyzed: false,
      licenseConcluded: NOASSERTION,
      licenseDeclared: NOASSERTION,
      copyrightText: NOASSERTION,
      primaryPackagePurpose: 'CONTAINER',
      ...(purl ? { externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: purl }] } : {}),
      comment: 'container image referenced by a Kubernetes manifest in this bundle (pulled on the node, not part of the image)',
    });
  });
  const charts = uniqueCharts(inv.manifests.flatMap((m) => m.charts));
  charts.list.forEach(({ repo, chart, version }, i) => {
    packages.push({
      name: chart,
      SPDXID: id('Chart', i),
      ...(version ? { versionInfo: version } : {}),
      downloadLocation: location(repo),
      filesAnalyzed: false,
      licenseConcluded: NOASSERTION,
      licenseDeclared: NOASSERTION,
      copyrightText: NOASSERTION,
      primaryPackagePurpose: 'INSTALL',
      comment: `Helm chart${repo ? ` from ${repo}` : ''}, installed by the node's Helm controller`,
    });
  });
  for (const m of inv.manifests) {
    const file = fileIds.get(m.path);
    if (!file) continue;
    for (const ref of m.images) rel(file, 'DEPENDS_ON', id('ContainerImage', images.indexOf(ref)));
    for (const c of m.charts) rel(file, 'DEPENDS_ON', id('Chart', charts.indexOf(c)));
  }

  return {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name: docName,
    documentNamespace: `https://spdx.org/spdxdocs/${TOOL_NAME}/${encodeURIComponent(docName)}-${stableUuid('spdx', inv.manifest.digest)}`,
    creationInfo: { created: epochTime(inv.epoch), creators: [`Tool: ${TOOL_NAME}-${TOOL_VERSION}`] },
    packages,
    files,
    relationships: rels,
  };
}
