/**
 * Open an image location as a Target: `openSource` to read from, `openDestination` to write to.
 * Each transport does its own (src/store/oci-layout.ts, oci-archive.ts, docker-archive.ts,
 * registry.ts); archives are unpacked into (or assembled in) a temporary layout `close()` removes.
 */
import { transportOf } from './transport.js';
import type { DestinationDefaults, ImageLocation, OpenOptions, OpenedImage } from './types.js';

export type { DestinationDefaults, OpenOptions, OpenedImage } from './types.js';
export { parseImageArgument } from './transport.js';

export function openSource(loc: ImageLocation, opts: OpenOptions): Promise<OpenedImage> {
  return transportOf(loc).openSource(loc, opts);
}

export function openDestination(loc: ImageLocation, opts: OpenOptions & DestinationDefaults): Promise<OpenedImage> {
  return transportOf(loc).openDestination(loc, opts);
}
