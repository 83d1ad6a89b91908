import { gzipSync } from 'node:zlib';
import { pack as tarPack, type Header } from 'tar-stream';
import { digestOf } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/mediatypes.js';
import type { Descriptor } from '../../src/oci/types.js';
import { OciLayout } from '../../src/store/oci-layout.js';

export type CraftEntry = Partial<Header> & { name: string; content?: string | Buffer };

/** Write an uncompressed tar from raw headers, hostile ones included (tests only). */
export async function craftTar(entries: CraftEntry[]): Promise<Buffer> {
  const p = tarPack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((r) => p.on('end', () => r()));
  for (const e of entries) {
    const { content, ...h } = e;
    const body = content === undefined ? undefined : Buffer.from(content);
    await new Promise<void>((res, rej) => {
      const header = { mode: h.type === 'directory' ? 0o755 : 0o644, mtime: new Date(1_000_000_000_000), ...h } as Header;
      if (body) p.entry({ ...header, size: body.length }, body, (err) => (err ? rej(err) : res()));
      else p.entry(header, (err) => (err ? rej(err) : res()));
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** An OCI image in `dir` whose layers are the given entry lists (bottom first), tagged `tag`. */
export async function craftImage(dir: string, layers: CraftEntry[][], tag = 'x'): Promise<{ layout: OciLayout; manifest: Descriptor }> {
  const layout = await OciLayout.open(dir, { create: true });
  const layerDescs: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const entries of layers) {
    const tar = await craftTar(entries);
    const gz = gzipSync(tar);
    const d = { mediaType: MediaType.OciLayerGzip, digest: digestOf(gz), size: gz.length };
    await layout.push(d, gz);
    layerDescs.push(d);
    diffIds.push(digestOf(tar));
  }
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds } }));
  const configDesc = { mediaType: MediaType.OciConfig, digest: digestOf(config), size: config.length };
  await layout.push(configDesc, config);
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers: layerDescs }));
  const desc = { mediaType: MediaType.OciManifest, digest: digestOf(manifest), size: manifest.length };
  await layout.push(desc, manifest);
  await layout.tag(desc, tag);
  return { layout, manifest: desc };
}
