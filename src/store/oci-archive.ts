/** `oci-archive:<file.tar>[:tag]`: a tar of an OCI image layout. */
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { UserError } from '../errors.js';
import type { ImageCapabilities } from '../oci/target.js';
import type { Descriptor } from '../oci/types.js';
import { OciLayout } from './oci-layout.js';
import { splitPathRef } from './oci-layout.js';
import { stageFile, stagingLayout, unpackArchive, writeTar, type TarItem } from './tar.js';
import type { ImageTransport, LocalImageLocation, OpenedImage } from './types.js';

type OciArchiveLocation = Extract<LocalImageLocation, { transport: 'oci-archive' }>;

/** Tar a whole OCI layout directory (oci-archive transport), sorted, fixed times, staged then renamed. */
export async function writeOciArchive(layout: OciLayout, file: string): Promise<void> {
  const items: TarItem[] = [];
  const walk = async (rel: string): Promise<void> => {
    const abs = join(layout.dir, rel);
    for (const name of (await readdir(abs)).sort()) {
      if (name.includes('.tmp-') || name.startsWith('.build-')) continue;
      const r = rel ? `${rel}/${name}` : name;
      const st = await stat(join(layout.dir, r));
      if (st.isDirectory()) await walk(r);
      else items.push({ name: r, size: st.size, open: () => createReadStream(join(layout.dir, r)) });
    }
  };
  await walk('');
  await stageFile(file, (tmp) => writeTar(items, tmp));
}

const capabilities: ImageCapabilities = { multiPlatform: true, signatures: true, inPlace: false, remote: false };

const format = (l: OciArchiveLocation): string => `oci-archive:${l.path}${l.ref ? `:${l.ref}` : ''}`;

export const ociArchiveTransport: ImageTransport<OciArchiveLocation> = {
  name: 'oci-archive',
  capabilities,
  parse(rest, input, what) {
    const { path, ref } = splitPathRef(rest);
    if (!path) throw new UserError(`${what}: "${input}" names no path`);
    return { transport: 'oci-archive', path, ref };
  },
  format,
  identity: (l) => `oci-archive:${resolve(l.path)}`,

  /** Unpacked into a temporary layout, removed by `close`. */
  async openSource(loc) {
    const display = format(loc);
    const unpacked = await unpackArchive(loc.path, display);
    if (!unpacked.isOciLayout) {
      await unpacked.close();
      throw new UserError(`${display}: not an OCI archive (no oci-layout/index.json inside)`, 'for `docker save` output use docker-archive:<file>');
    }
    return { target: await OciLayout.open(unpacked.raw), reference: loc.ref, display, capabilities, tag: loc.ref, location: display, close: unpacked.close };
  },

  /** Assembled in a temporary layout beside the file, written by `close(root)`. */
  async openDestination(loc, opts) {
    const display = format(loc);
    const { layout, remove } = await stagingLayout(loc.path, display);
    const tag = loc.ref || opts.defaultTag || '';
    const opened: OpenedImage = {
      target: layout,
      layout,
      reference: tag,
      display,
      capabilities,
      tag,
      location: format({ ...loc, ref: tag }),
      async close(root?: Descriptor) {
        try {
          if (root) await writeOciArchive(layout, loc.path);
        } finally {
          await remove();
        }
      },
    };
    return opened;
  },
};
