/**
 * `kbundle build --sbom spdx|cyclonedx` (and `catalog build --sbom`): documents validated against
 * the official SPDX 2.3 and CycloneDX 1.6 JSON schemas (test/fixtures/sbom-schemas), their file
 * hashes checked against the layer as GNU tar unpacks it, downloads served on 127.0.0.1, and
 * byte-reproducible under SOURCE_DATE_EPOCH.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, relative } from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { parseKubernetesYaml } from '../src/sbom/index.js';
import { kbundleAsync, kbundleInProcess, REPO_ROOT, type CliResult } from './helpers/cli.js';
import { cleanupTempDirs, mustRun, tempDir } from './helpers/exec.js';
import { writeBundle } from './helpers/fixture-bundle.js';

const SCHEMAS = join(REPO_ROOT, 'test', 'fixtures', 'sbom-schemas');
const schema = (f: string) => JSON.parse(readFileSync(join(SCHEMAS, f), 'utf8')) as Record<string, unknown>;

function validators(): { spdx: ValidateFunction; cdx: ValidateFunction } {
  const ajv = new Ajv({ allErrors: true, strict: false });
  addFormats.default(ajv);
  // Formats of the CycloneDX schema that ajv-formats lacks: IRIs and internationalised e-mails.
  ajv.addFormat('iri-reference', /^\S*$/u);
  ajv.addFormat('idn-email', /^\S+@\S+$/u);
  ajv.addSchema(schema('spdx.schema.json'));
  ajv.addSchema(schema('jsf-0.82.schema.json'));
  return { spdx: ajv.compile(schema('spdx-2.3.schema.json')), cdx: ajv.compile(schema('bom-1.6.schema.json')) };
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

const BINARY = Buffer.from('#!/bin/sh\necho downloaded tool\n');
/** A tar.gz holding `bin/tool` (made with GNU tar, as upstream release archives are). */
function makeArchive(dir: string): Buffer {
  mkdirSync(join(dir, 'src', 'bin'), { recursive: true });
  writeFileSync(join(dir, 'src', 'bin', 'tool'), BINARY);
  mustRun('tar', ['-C', join(dir, 'src'), '-czf', join(dir, 'tool.tar.gz'), 'bin/tool']);
  return readFileSync(join(dir, 'tool.tar.gz'));
}

const MANIFEST = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: "{{ namespace }}"}
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: docker.io/library/busybox:1.36
      containers:
        - name: web
          image: "{{ registry }}/web/server:2.0"
        - name: side
          image: quay.io/prometheus/node-exporter@sha256:${'a'.repeat(64)}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {k: v}
`;

let server: Server;
let base: string;
let archive: Buffer;
let cacheDir: string;
let ajv: ReturnType<typeof validators>;

beforeAll(async () => {
  archive = makeArchive(tempDir());
  cacheDir = tempDir();
  server = createServer((req, res) => {
    if (req.url === '/tool.tar.gz') res.end(archive);
    else if (req.url === '/plain.txt') res.end('plain download\n');
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  ajv = validators();
});
afterAll(async () => {
  await new Promise((r) => server?.close(r));
  cleanupTempDirs();
});

function runSpec(): string {
  return `name: web-stack
version: 2.0.1
description: web stack with a chart, manifests and pinned downloads
type: run
platforms: [linux/amd64, linux/arm64]
source: https://github.com/example/web-stack
license: Apache-2.0
config:
  values:
    namespace: web
    registry: registry.example:5000
files:
  - url: ${base}/tool.tar.gz
    sha256: ${sha256(archive)}
    extract: bin/tool
    dst: usr/local/bin/tool
    mode: "0755"
    license: MIT OR Apache-2.0
platform_files:
  linux/amd64:
    - url: ${base}/plain.txt
      sha256: ${sha256('plain download\n')}
      dst: usr/local/share/plain.txt
manifests:
  - src: deploy.yaml
charts:
  - name: metrics
    repo: https://charts.example.org/stable
    chart: metrics-server
    version: 3.12.1
    values: |
      image:
        repository: registry.k8s.io/metrics-server/metrics-server
        tag: v0.7.1
`;
}

function ok(r: CliResult): CliResult {
  if (r.code !== 0) throw new Error(`kbundle exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r;
}

async function build(
  dir: string,
  out: string,
  format: string,
  env: NodeJS.ProcessEnv = {},
): Promise<{ sboms: { platform: string; image: string; path: string; digest: string }[]; platforms: { platform: string; digest: string; layer: string }[] }> {
  const r = ok(
    await kbundleAsync(['build', dir, '-o', `oci:${out}`, '--sbom', format, '--sbom-dir', join(out, '..', `sbom-${format}`), '--json'], {
      env: { ...process.env, KBUNDLE_CACHE_DIR: cacheDir, ...env },
    }),
  );
  return JSON.parse(r.stdout) as never;
}

/** path → sha256 of every regular file of a layer blob, as GNU tar unpacks it. */
function unpackedFiles(layoutDir: string, layerDigest: string): Map<string, string> {
  const dst = tempDir();
  mustRun('tar', ['-xzf', join(layoutDir, 'blobs', 'sha256', layerDigest.slice(7)), '-C', dst]);
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      const st = statSync(p, { throwIfNoEntry: false });
      if (!st) continue;
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && !statSync(p).isSymbolicLink()) out.set(relative(dst, p), sha256(readFileSync(p)));
    }
  };
  walk(dst);
  return out;
}

describe('build --sbom', () => {
  it('SPDX 2.3: valid against the official schema; every file with its SHA-256 and layer, downloads with URL, checksum and licence, manifests with their images', async () => {
    const dir = writeBundle(join(tempDir(), 'web-stack'), runSpec(), [{ path: 'deploy.yaml', content: MANIFEST }]);
    const out = join(tempDir(), 'oci');
    const r = await build(dir, out, 'spdx');
    expect(r.sboms.map((s) => s.platform)).toEqual(['linux/amd64', 'linux/arm64']);
    for (const s of r.sboms) {
      const bytes = readFileSync(s.path);
      expect(`sha256:${sha256(bytes)}`).toBe(s.digest);
      const doc = JSON.parse(bytes.toString()) as Record<string, any>;
      if (!ajv.spdx(doc)) throw new Error(JSON.stringify(ajv.spdx.errors, null, 2));
      // The validator does refuse what breaks the schema.
      expect(ajv.spdx({ ...doc, files: [{ fileName: './x', SPDXID: 'SPDXRef-x' }] })).toBe(false);
      const plat = r.platforms.find((p) => p.platform === s.platform)!;
      expect(s.image).toBe(plat.digest);
      expect(doc).toMatchObject({ spdxVersion: 'SPDX-2.3', dataLicense: 'CC0-1.0', creationInfo: { created: '1970-01-01T00:00:00Z', creators: ['Tool: kbundle-0.1.0'] } });
      const image = doc.packages.find((p: any) => p.SPDXID === 'SPDXRef-Image');
      expect(image).toMatchObject({
        name: 'web-stack',
        versionInfo: '2.0.1',
        licenseDeclared: 'Apache-2.0',
        checksums: [{ algorithm: 'SHA256', checksumValue: plat.digest.slice(7) }],
        primaryPackagePurpose: 'CONTAINER',
      });
      expect(doc.relationships).toContainEqual({ spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: 'SPDXRef-Image' });
      const layer = doc.packages.find((p: any) => p.SPDXID === 'SPDXRef-Layer-0');
      expect(layer.checksums).toEqual([{ algorithm: 'SHA256', checksumValue: plat.layer.slice(7) }]);

      // Every regular file GNU tar unpacks from the layer is listed, with the same SHA-256, contained by that layer.
      const unpacked = unpackedFiles(out, plat.layer);
      const listed = new Map<string, any>(doc.files.map((f: any) => [f.fileName.slice(2), f]));
      expect([...listed.keys()].sort()).toEqual([...unpacked.keys()].sort());
      for (const [path, hash] of unpacked) {
        const f = listed.get(path);
        expect(f.checksums).toContainEqual({ algorithm: 'SHA256', checksumValue: hash });
        expect(doc.relationships).toContainEqual({ spdxElementId: 'SPDXRef-Layer-0', relationshipType: 'CONTAINS', relatedSpdxElement: f.SPDXID });
      }

      // The extracted download: source URL, pinned checksum, declared licence, and the file expanded from it.
      const dl = doc.packages.find((p: any) => p.downloadLocation === `${base}/tool.tar.gz`);
      expect(dl).toMatchObject({ name: 'tool.tar.gz', checksums: [{ algorithm: 'SHA256', checksumValue: sha256(archive) }], licenseDeclared: 'MIT OR Apache-2.0' });
      const tool = listed.get('usr/local/bin/tool');
      expect(tool.checksums).toContainEqual({ algorithm: 'SHA256', checksumValue: sha256(BINARY) });
      expect(doc.relationships).toContainEqual({ spdxElementId: tool.SPDXID, relationshipType: 'EXPANDED_FROM_ARCHIVE', relatedSpdxElement: dl.SPDXID });
      // The per-platform download only in the amd64 image.
      const plain = doc.packages.find((p: any) => p.downloadLocation === `${base}/plain.txt`);
      if (s.platform === 'linux/amd64') {
        expect(plain).toMatchObject({ licenseDeclared: 'NOASSERTION' });
        expect(doc.relationships).toContainEqual({ spdxElementId: listed.get('usr/local/share/plain.txt').SPDXID, relationshipType: 'COPY_OF', relatedSpdxElement: plain.SPDXID });
      } else expect(plain).toBeUndefined();

      // Manifests (k3s and k0s copies) depend on the images they name, placeholders rendered with the defaults.
      const images = doc.packages.filter((p: any) => p.SPDXID.startsWith('SPDXRef-ContainerImage-')).map((p: any) => p.name);
      expect(images.sort()).toEqual(
        [
          'docker.io/library/busybox:1.36',
          'registry.example:5000/web/server:2.0',
          `quay.io/prometheus/node-exporter@sha256:${'a'.repeat(64)}`,
          'registry.k8s.io/metrics-server/metrics-server:v0.7.1',
        ].sort(),
      );
      const server = doc.packages.find((p: any) => p.name === 'registry.example:5000/web/server:2.0');
      expect(server.externalRefs).toEqual([{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: 'pkg:docker/web/server@2.0?repository_url=registry.example%3A5000' }]);
      const deploy = listed.get('manifests/k3s/deploy.yaml');
      expect(doc.relationships).toContainEqual({ spdxElementId: deploy.SPDXID, relationshipType: 'DEPENDS_ON', relatedSpdxElement: server.SPDXID });
      const chart = doc.packages.find((p: any) => p.name === 'metrics-server');
      expect(chart).toMatchObject({ versionInfo: '3.12.1', downloadLocation: 'https://charts.example.org/stable' });
      const helmChart = listed.get('manifests/k3s/metrics-helmchart.yaml');
      expect(doc.relationships).toContainEqual({ spdxElementId: helmChart.SPDXID, relationshipType: 'DEPENDS_ON', relatedSpdxElement: chart.SPDXID });
    }
  });

  it('CycloneDX 1.6: valid against the official schema; layers contain their files, downloads carry URL, hash and licence', async () => {
    const dir = writeBundle(join(tempDir(), 'web-stack'), runSpec(), [{ path: 'deploy.yaml', content: MANIFEST }]);
    const out = join(tempDir(), 'oci');
    const r = await build(dir, out, 'cyclonedx');
    for (const s of r.sboms) {
      expect(s.path).toMatch(/web-stack_2\.0\.1\.linux-(amd|arm)64\.cdx\.json$/);
      const doc = JSON.parse(readFileSync(s.path, 'utf8')) as Record<string, any>;
      if (!ajv.cdx(doc)) throw new Error(JSON.stringify(ajv.cdx.errors, null, 2));
      expect(ajv.cdx({ ...doc, components: [{ type: 'file', name: 'x', hashes: [{ alg: 'SHA-256', content: 'nothex' }] }] })).toBe(false);
      const plat = r.platforms.find((p) => p.platform === s.platform)!;
      expect(doc).toMatchObject({ bomFormat: 'CycloneDX', specVersion: '1.6', version: 1, metadata: { timestamp: '1970-01-01T00:00:00Z' } });
      expect(doc.metadata.component).toMatchObject({
        type: 'container',
        name: 'web-stack',
        version: '2.0.1',
        hashes: [{ alg: 'SHA-256', content: plat.digest.slice(7) }],
        licenses: [{ expression: 'Apache-2.0' }],
      });
      const layer = doc.components.find((c: any) => c['bom-ref'] === 'layer:0');
      expect(layer.hashes).toEqual([{ alg: 'SHA-256', content: plat.layer.slice(7) }]);
      const unpacked = unpackedFiles(out, plat.layer);
      const files = new Map<string, any>(layer.components.map((c: any) => [c.name, c]));
      expect([...files.keys()].sort()).toEqual([...unpacked.keys()].sort());
      for (const [path, hash] of unpacked) expect(files.get(path).hashes).toContainEqual({ alg: 'SHA-256', content: hash });
      const dl = doc.components.find((c: any) => c.name === 'tool.tar.gz');
      expect(dl).toMatchObject({ licenses: [{ expression: 'MIT OR Apache-2.0' }], hashes: [{ alg: 'SHA-256', content: sha256(archive) }] });
      expect(dl.externalReferences[0]).toMatchObject({ type: 'distribution', url: `${base}/tool.tar.gz` });
      const deploy = files.get('manifests/k0s/deploy.yaml');
      const dep = doc.dependencies.find((d: any) => d.ref === deploy['bom-ref']);
      const names = dep.dependsOn.map((ref: string) => doc.components.find((c: any) => c['bom-ref'] === ref).name);
      expect(names.sort()).toEqual(['docker.io/library/busybox:1.36', 'registry.example:5000/web/server:2.0', `quay.io/prometheus/node-exporter@sha256:${'a'.repeat(64)}`].sort());
    }
  });

  it('is byte-reproducible: the same inputs and SOURCE_DATE_EPOCH give the same bytes, another epoch another date', async () => {
    const dir = writeBundle(join(tempDir(), 'web-stack'), runSpec(), [{ path: 'deploy.yaml', content: MANIFEST }]);
    for (const format of ['spdx', 'cyclonedx']) {
      const a = await build(dir, join(tempDir(), 'oci'), format, { SOURCE_DATE_EPOCH: '1700000000' });
      const b = await build(dir, join(tempDir(), 'oci'), format, { SOURCE_DATE_EPOCH: '1700000000' });
      expect(a.sboms.map((s) => s.digest)).toEqual(b.sboms.map((s) => s.digest));
      expect(readFileSync(a.sboms[0]!.path, 'utf8')).toContain('2023-11-14T22:13:20Z');
      const c = await build(dir, join(tempDir(), 'oci'), format, { SOURCE_DATE_EPOCH: '1700000001' });
      expect(c.sboms[0]!.digest).not.toBe(a.sboms[0]!.digest);
    }
  });

  it('a Dockerfile build lists each COPY layer with its history line; default --sbom-dir is beside the output', async () => {
    const dir = join(tempDir(), 'legacy');
    mkdirSync(join(dir, 'assets'), { recursive: true });
    writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY run.sh /\nCOPY assets /assets\n');
    writeFileSync(join(dir, 'run.sh'), '#!/bin/sh\n', { mode: 0o755 });
    writeFileSync(join(dir, 'assets', 'a.txt'), 'a\n');
    const root = tempDir();
    const r = ok(await kbundleAsync(['build', dir, '-o', `oci:${join(root, 'oci')}`, '--platform', 'linux/amd64', '--sbom', 'spdx', '--json']));
    const j = JSON.parse(r.stdout) as { sboms: { path: string }[] };
    expect(j.sboms[0]!.path).toBe(join(root, 'sbom', 'legacy_latest.linux-amd64.spdx.json'));
    const doc = JSON.parse(readFileSync(j.sboms[0]!.path, 'utf8')) as Record<string, any>;
    if (!ajv.spdx(doc)) throw new Error(JSON.stringify(ajv.spdx.errors, null, 2));
    const layers = doc.packages.filter((p: any) => p.SPDXID.startsWith('SPDXRef-Layer-'));
    expect(layers).toHaveLength(2);
    expect(layers[0].comment).toContain('COPY run.sh / # buildkit');
    expect(layers[1].comment).toContain('COPY assets /assets # buildkit');
    const a = doc.files.find((f: any) => f.fileName === './assets/a.txt');
    expect(doc.relationships).toContainEqual({ spdxElementId: 'SPDXRef-Layer-1', relationshipType: 'CONTAINS', relatedSpdxElement: a.SPDXID });
  });

  it('catalog build --sbom writes one document per platform image of every selected bundle', async () => {
    const catalog = tempDir();
    writeBundle(join(catalog, 'tool'), 'name: tool\nversion: 1.0.0\ndescription: t\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - src: t.txt\n    dst: t.txt\n', [
      { path: 't.txt', content: 't\n' },
    ]);
    const out = tempDir();
    const r = ok(await kbundleAsync(['catalog', 'build', '-C', catalog, '-o', `oci:${join(out, 'catalog')}`, '--sbom', 'cyclonedx', '--json']));
    const j = JSON.parse(r.stdout) as { sboms: { path: string; platform: string }[] };
    expect(j.sboms.map((s) => [s.platform, s.path])).toEqual([['linux/amd64', join(out, 'sbom', 'tool_1.0.0.linux-amd64.cdx.json')]]);
    const doc = JSON.parse(readFileSync(j.sboms[0]!.path, 'utf8')) as Record<string, any>;
    if (!ajv.cdx(doc)) throw new Error(JSON.stringify(ajv.cdx.errors, null, 2));
    // A second run finds the bundle unchanged and still writes its SBOM, the same bytes.
    const again = JSON.parse(ok(await kbundleAsync(['catalog', 'build', '-C', catalog, '-o', `oci:${join(out, 'catalog')}`, '--sbom', 'cyclonedx', '--json'])).stdout) as {
      skipped: unknown[];
      sboms: { digest: string }[];
    };
    expect(again.skipped).toHaveLength(1);
    expect(again.sboms[0]!.digest).toBe((j.sboms[0] as unknown as { digest: string }).digest);
  });

  it('refuses an unknown format, --sbom-dir alone, and a licence on a bundle file, before building anything', async () => {
    const dir = writeBundle(join(tempDir(), 'b'), 'name: b\nversion: 1.0.0\ndescription: b\ntype: container\nfiles:\n  - src: x\n    dst: x\n', [{ path: 'x', content: 'x' }]);
    const out = join(tempDir(), 'oci');
    const bad = await kbundleInProcess(['build', dir, '-o', `oci:${out}`, '--sbom', 'xml']);
    expect(bad.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(bad.stderr).toMatch(/--sbom: "xml" must be spdx or cyclonedx/);
    const alone = await kbundleInProcess(['build', dir, '-o', `oci:${out}`, '--sbom-dir', tempDir()]);
    expect(alone.stderr).toMatch(/--sbom-dir needs --sbom/);
    expect(statSync(out, { throwIfNoEntry: false })).toBeUndefined();
    const lic = writeBundle(join(tempDir(), 'c'), 'name: c\nversion: 1.0.0\ndescription: c\ntype: container\nfiles:\n  - src: x\n    dst: x\n    license: MIT\n', [{ path: 'x', content: 'x' }]);
    const r = await kbundleInProcess(['build', lic, '-o', `oci:${out}`, '--sbom', 'spdx']);
    expect(r.stderr).toMatch(/files\.0\.license: license is declared for url downloads/);
    const expr = writeBundle(
      join(tempDir(), 'd'),
      `name: d\nversion: 1.0.0\ndescription: d\ntype: container\nfiles:\n  - url: ${base}/plain.txt\n    sha256: "${'0'.repeat(64)}"\n    dst: x\n    license: "MIT; rm -rf /"\n`,
      [],
    );
    expect((await kbundleInProcess(['build', expr, '-o', `oci:${out}`])).stderr).toMatch(/files\.0\.license: must be an SPDX licence expression/);
  });
});

describe('image references in Kubernetes YAML', () => {
  it('finds image: strings and Helm image objects, ignores non-Kubernetes YAML, refuses broken YAML', () => {
    expect(parseKubernetesYaml(MANIFEST.replace(/\{\{ (\w+) \}\}/g, 'x'), 'm')!.images).toContain('x/web/server:2.0');
    expect(parseKubernetesYaml('a: 1\n', 'm')).toBeUndefined();
    expect(() => parseKubernetesYaml('apiVersion: v1\nkind: [\n', 'm.yaml')).toThrow(/m\.yaml: invalid YAML \(line \d+, column \d+\)/);
    const k0s =
      'apiVersion: helm.k0sproject.io/v1beta1\nkind: Chart\nmetadata: {name: c}\nspec:\n  chartName: oci://ghcr.io/org/charts/app\n  version: 1.0.0\n  values: |\n    image: {registry: ghcr.io, repository: org/app, tag: "1.0"}\n';
    expect(parseKubernetesYaml(k0s, 'k')).toEqual({ images: ['ghcr.io/org/app:1.0'], charts: [{ repo: 'oci://ghcr.io/org/charts', chart: 'app', version: '1.0.0' }] });
  });
});
