/**
 * The one parser for image arguments, used by every command, and the list of transports:
 *
 * | form                                   | transport       |
 * |----------------------------------------|-----------------|
 * | `oci:<dir>[:tag]`                      | OCI layout      |
 * | `oci-archive:<file.tar>[:tag]`         | OCI archive     |
 * | `docker-archive:<file.tar>[:name:tag]` | docker archive  |
 * | `docker://host/repo[:tag|@digest]`     | registry        |
 * | `host/repo[:tag|@digest]` (bare)       | registry        |
 *
 * plus the forms nodes name images by: Kairos `local_file: true` paths (`localImageLocation`) and
 * kairos-agent's `oci:`/`docker:`/`container:` sysext sources (`nodeImageLocation`).
 * Each transport's own syntax, reader and writer are in its module.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { KbError, UserError } from '../errors.js';
import { pathExists } from '../fs-util.js';
import type { ImageCapabilities } from '../oci/target.js';
import { dockerArchiveTransport } from './docker-archive.js';
import { ociArchiveTransport } from './oci-archive.js';
import { ociLayoutTransport, splitPathRef } from './oci-layout.js';
import { registryTransport } from './registry.js';
import type { ImageLocation, ImageTransport, RegistryLocation, TransportName } from './types.js';

export type { ImageLocation, LocalImageLocation, RegistryLocation, TransportName } from './types.js';

const TRANSPORTS: { [K in TransportName]: ImageTransport<Extract<ImageLocation, { transport: K }>> } = {
  oci: ociLayoutTransport,
  'oci-archive': ociArchiveTransport,
  'docker-archive': dockerArchiveTransport,
  docker: registryTransport,
};

const NAMES = Object.keys(TRANSPORTS) as TransportName[];

const FORMS = 'oci:<dir>[:tag], oci-archive:<file.tar>[:tag], docker-archive:<file.tar>[:name:tag] or docker://<registry>/<repo>:<tag>';

export function transportOf<L extends ImageLocation>(loc: L): ImageTransport<L> {
  return TRANSPORTS[loc.transport] as unknown as ImageTransport<L>;
}

export function capabilitiesOf(loc: ImageLocation): ImageCapabilities {
  return transportOf(loc).capabilities;
}

export function isRegistryLocation(loc: ImageLocation): loc is RegistryLocation {
  return capabilitiesOf(loc).remote;
}

/** The transport named by a `<name>:` prefix of `s`, if any. */
function prefixed(s: string): { transport: TransportName; rest: string } | undefined {
  const i = s.indexOf(':');
  if (i <= 0) return undefined;
  const name = s.slice(0, i);
  return (NAMES as string[]).includes(name) ? { transport: name as TransportName, rest: s.slice(i + 1) } : undefined;
}

/** `s` names its transport (`oci:…`, `docker://…`, …) rather than being a path or a bare reference. */
export function hasTransportPrefix(s: string): boolean {
  return prefixed(s) !== undefined;
}

export interface ParseOptions {
  /** Accept a bare `host/repo[:tag]` as a registry reference (default true); false demands a transport prefix. */
  bare?: boolean;
}

/**
 * Any image argument: `oci:dir[:tag]`, `oci-archive:f.tar[:tag]`, `docker-archive:f.tar[:name:tag]`,
 * `docker://host/repo:tag`, or (unless `bare: false`) a bare registry reference.
 */
export function parseImageArgument(s: string, what = 'image', opts: ParseOptions = {}): ImageLocation {
  const p = prefixed(s);
  if (p) return TRANSPORTS[p.transport].parse(p.rest, s, what);
  if (opts.bare === false) throw new UserError(`${what}: "${s}" has no known transport`, `write it as ${FORMS}`);
  return registryTransport.parseBare(s, what);
}

export function formatLocation(loc: ImageLocation): string {
  return transportOf(loc).format(loc);
}

/**
 * Kairos `local_file: true` targets: a directory is an OCI layout (`dir:tag` picks one image of
 * several), a file an archive (docker-archive sources also read OCI archives).
 */
export async function localImageLocation(path: string, what: string): Promise<ImageLocation> {
  let st;
  let ref = '';
  try {
    st = await stat(path);
  } catch {
    const i = path.lastIndexOf(':');
    st = i > 0 ? await stat(path.slice(0, i)).catch(() => undefined) : undefined;
    if (!st?.isDirectory()) throw new KbError('NOT_FOUND', `${what}: local file ${path} not found`);
    ref = path.slice(i + 1);
    path = path.slice(0, i);
  }
  if (st.isDirectory()) return { transport: 'oci', path, ref };
  return { transport: 'docker-archive', path, ref: '' };
}

/**
 * kairos-agent sysext sources: `oci-archive:`/`docker-archive:` as above; `oci:`, `docker:` and
 * `container:` name registry references, except that a local directory holding an OCI layout
 * (`<dir>` or `<dir>:<tag>`) is read as one.
 */
export async function nodeImageLocation(scheme: string, ref: string, what: string): Promise<ImageLocation> {
  if (scheme === 'oci-archive' || scheme === 'docker-archive') return parseImageArgument(`${scheme}:${ref}`, what);
  if (scheme === 'oci') {
    if (await pathExists(join(ref, 'oci-layout'))) return { transport: 'oci', path: ref, ref: '' };
    const split = splitPathRef(ref);
    if (split.ref && (await pathExists(join(split.path, 'oci-layout')))) return { transport: 'oci', ...split };
  }
  return { transport: 'docker', ref };
}

/** An OCI layout directory (`oci:<dir>[:tag]`): for commands that work on a layout itself (catalog). */
export function isLayoutLocation(loc: ImageLocation): loc is Extract<ImageLocation, { transport: 'oci' }> {
  return transportOf(loc) === (ociLayoutTransport as unknown);
}
