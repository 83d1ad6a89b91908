/**
 * CycloneDX 1.6 JSON of one image inventory. The image is `metadata.component` (type container);
 * its layers are components (type data) holding their files as nested components (type file,
 * SHA-1 and SHA-256), which is how CycloneDX expresses containment. Pinned downloads are file
 * components with the source URL (distribution reference), the pinned SHA-256 and the declared
 * licence; a Kubernetes manifest file depends on the container images and Helm charts it names.
 * Reproducible: the serial number derives from the manifest digest, the time from SOURCE_DATE_EPOCH.
 */
import { dockerPurl, downloadName, epochTime, hexOf, ociPurl, parseImageRef, stableUuid, TOOL_NAME, TOOL_VERSION, uniqueCharts, uniqueInOrder } from './common.js';
import type { ImageInventory } from './inventory.js';

export const CYCLONEDX_SPEC_VERSION = '1.6';

type Json = Record<string, unknown>;

const prop = (name: string, value: string) => ({ name: `kbundle:${name}`, value });

function licenses(expr: string | undefined): Json[] | undefined {
  return expr ? [{ expression: expr }] : undefined;
}

export function cyclonedxDocument(inv: ImageInventory): Json {
  const imageRef = `image:${inv.manifest.digest}`;
  const fileRef = (i: number) => `file:${i}`;
  const fileIndex = new Map(inv.files.map((f, i) => [f.path, i]));
  const downloadOf = new Map(inv.downloads.map((d, i) => [d.path, i]));

  const image: Json = {
    type: 'container',
    'bom-ref': imageRef,
    name: inv.name,
    version: inv.version,
    ...(inv.description ? { description: inv.description } : {}),
    hashes: [{ alg: 'SHA-256', content: hexOf(inv.manifest.digest) }],
    ...(licenses(inv.license) ? { licenses: licenses(inv.license) } : {}),
    purl: ociPurl(inv.name, inv.manifest.digest, inv.platform),
    ...(inv.source ? { externalReferences: [{ type: 'vcs', url: inv.source }] } : {}),
    properties: [
      prop('platform', inv.platform),
      prop('manifest', inv.manifest.digest),
      prop('config', inv.config),
      ...(inv.type ? [prop('bundle-type', inv.type)] : []),
      ...(inv.revision ? [prop('revision', inv.revision)] : []),
    ],
  };

  const layers: Json[] = inv.layers.map((l) => ({
    type: 'data',
    'bom-ref': `layer:${l.index}`,
    name: `${inv.name} layer ${l.index}`,
    version: l.diffId,
    hashes: [{ alg: 'SHA-256', content: hexOf(l.digest) }],
    properties: [
      prop('layer:digest', l.digest),
      prop('layer:diff-id', l.diffId),
      prop('layer:media-type', l.mediaType),
      prop('layer:size', String(l.size)),
      ...(l.createdBy ? [prop('layer:created-by', l.createdBy)] : []),
    ],
    components: inv.files
      .map((f, i) => ({ f, i }))
      .filter(({ f }) => f.layer === l.index)
      .map(({ f, i }) => {
        const d = downloadOf.get(f.path);
        return {
          type: 'file',
          'bom-ref': fileRef(i),
          name: f.path,
          hashes: [
            { alg: 'SHA-1', content: f.sha1 },
            { alg: 'SHA-256', content: f.sha256 },
          ],
          properties: [prop('layer', l.digest), prop('mode', f.mode.toString(8).padStart(4, '0')), prop('size', String(f.size)), ...(d !== undefined ? [prop('download', `download:${d}`)] : [])],
        };
      }),
  }));

  const downloads: Json[] = inv.downloads.map((d, i) => ({
    type: 'file',
    'bom-ref': `download:${i}`,
    name: downloadName(d.url),
    hashes: [{ alg: 'SHA-256', content: d.sha256 }],
    ...(licenses(d.license) ? { licenses: licenses(d.license) } : {}),
    externalReferences: [{ type: 'distribution', url: d.url, hashes: [{ alg: 'SHA-256', content: d.sha256 }] }],
    properties: [prop('installed-as', d.path), ...(d.extract ? [prop('extract', d.extract)] : [])],
  }));

  const images = uniqueInOrder(inv.manifests.flatMap((m) => m.images));
  const imageComponents: Json[] = images.map((ref, i) => {
    const r = parseImageRef(ref);
    const purl = dockerPurl(ref);
    return {
      type: 'container',
      'bom-ref': `referenced-image:${i}`,
      name: ref,
      ...(r.digest || r.tag ? { version: r.digest ?? r.tag } : {}),
      ...(purl ? { purl } : {}),
      scope: 'required',
    };
  });
  const charts = uniqueCharts(inv.manifests.flatMap((m) => m.charts));
  const chartComponents: Json[] = charts.list.map(({ repo, chart, version }, i) => {
    return {
      type: 'application',
      'bom-ref': `chart:${i}`,
      name: chart,
      ...(version ? { version } : {}),
      ...(/^(https?|oci):\/\//.test(repo) ? { externalReferences: [{ type: 'distribution', url: repo }] } : {}),
      properties: [prop('helm-repository', repo)],
    };
  });

  const dependencies: Json[] = [{ ref: imageRef, dependsOn: inv.layers.map((l) => `layer:${l.index}`) }];
  for (const m of inv.manifests) {
    const i = fileIndex.get(m.path);
    if (i === undefined) continue;
    const on = [...m.images.map((ref) => `referenced-image:${images.indexOf(ref)}`), ...m.charts.map((c) => `chart:${charts.indexOf(c)}`)];
    if (on.length) dependencies.push({ ref: fileRef(i), dependsOn: uniqueInOrder(on) });
  }

  return {
    $schema: 'http://cyclonedx.org/schema/bom-1.6.schema.json',
    bomFormat: 'CycloneDX',
    specVersion: CYCLONEDX_SPEC_VERSION,
    serialNumber: `urn:uuid:${stableUuid('cyclonedx', inv.manifest.digest)}`,
    version: 1,
    metadata: {
      timestamp: epochTime(inv.epoch),
      tools: { components: [{ type: 'application', name: TOOL_NAME, version: TOOL_VERSION }] },
      component: image,
    },
    components: [...layers, ...downloads, ...imageComponents, ...chartComponents],
    dependencies,
  };
}
