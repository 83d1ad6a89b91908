/**
 * `docker://host/repo[:tag|@digest]`, or the bare reference as docker and cosign take it: one
 * repository of a registry. The client and the Target live in src/registry/ (loaded on open, so
 * parsing an argument does not load the HTTP stack).
 */
import { KbError, UserError } from '../errors.js';
import type { ImageCapabilities } from '../oci/target.js';
import { manifestReference, parseReference, type ImageReference } from '../registry/reference.js';
import type { ImageTransport, OpenOptions, OpenedImage, RegistryLocation } from './types.js';

const capabilities: ImageCapabilities = { multiPlatform: true, signatures: true, inPlace: true, remote: true };

const format = (l: RegistryLocation): string => `docker://${l.ref}`;

async function open(loc: RegistryLocation, opts: OpenOptions, access: 'pull' | 'push'): Promise<{ opened: Omit<OpenedImage, 'reference' | 'tag'>; ref: ImageReference }> {
  if (!opts.client) throw new KbError('INTERNAL', `${format(loc)}: opened without a registry client`);
  const ref = parseReference(loc.ref);
  const { RegistryTarget } = await import('../registry/registry-target.js');
  const target = RegistryTarget.forReference(opts.client, ref, { ...(opts.registry ?? {}), access: opts.registry?.access ?? access });
  const display = format(loc);
  return { opened: { target, display, capabilities, registryRef: ref, location: display, close: async () => undefined }, ref };
}

export const registryTransport: ImageTransport<RegistryLocation> & { parseBare(input: string, what: string): RegistryLocation } = {
  name: 'docker',
  capabilities,
  parse(rest, input, what) {
    if (!rest.startsWith('//') || rest.length <= 2) throw new UserError(`${what}: "${input}" must be docker://<registry>/<repo>[:tag|@digest]`);
    const ref = rest.slice(2);
    parseReference(ref, what);
    return { transport: 'docker', ref };
  },
  /** `host/repo:tag` without a transport. */
  parseBare(input, what) {
    parseReference(input, what);
    return { transport: 'docker', ref: input };
  },
  format,
  identity(l) {
    const ref = parseReference(l.ref, 'image');
    return `${ref.registry}/${ref.repository}`;
  },
  async openSource(loc, opts) {
    const { opened, ref } = await open(loc, opts, 'pull');
    return { ...opened, reference: manifestReference(ref), tag: ref.tag ?? '' };
  },
  async openDestination(loc, opts) {
    const { opened, ref } = await open(loc, opts, 'push');
    return { ...opened, reference: ref.digest ?? ref.tag ?? 'latest', tag: ref.tag ?? (ref.digest ? '' : 'latest') };
  },
};
