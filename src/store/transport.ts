import { UserError } from '../errors.js';

/** Image locations as skopeo spells them (containers-transports(5)). */
export type ImageLocation =
  | { transport: 'oci'; path: string; ref: string }
  | { transport: 'oci-archive'; path: string; ref: string }
  | { transport: 'docker-archive'; path: string; ref: string }
  | { transport: 'docker'; ref: string };

const TRANSPORTS = ['oci', 'oci-archive', 'docker-archive', 'docker'] as const;

/** Split `path[:ref]`: a ref is what follows the last colon, unless that part looks like a path. */
function splitPathRef(rest: string): { path: string; ref: string } {
  const i = rest.lastIndexOf(':');
  if (i > 0 && !rest.slice(i + 1).includes('/')) return { path: rest.slice(0, i), ref: rest.slice(i + 1) };
  return { path: rest, ref: '' };
}

export function parseLocation(s: string, what = 'image'): ImageLocation {
  const i = s.indexOf(':');
  const transport = i > 0 ? s.slice(0, i) : '';
  if (!(TRANSPORTS as readonly string[]).includes(transport)) {
    throw new UserError(`${what}: "${s}" has no known transport`, `write it as oci:<dir>[:tag], oci-archive:<file.tar>, docker-archive:<file.tar> or docker://<registry>/<repo>:<tag>`);
  }
  const rest = s.slice(i + 1);
  if (transport === 'docker') {
    if (!rest.startsWith('//') || rest.length <= 2) throw new UserError(`${what}: "${s}" must be docker://<registry>/<repo>[:tag|@digest]`);
    return { transport: 'docker', ref: rest.slice(2) };
  }
  // skopeo: docker-archive:path[:name:tag] splits at the first colon; the others at the last.
  const firstColon = rest.indexOf(':');
  const { path, ref } = transport === 'docker-archive' && firstColon > 0 ? { path: rest.slice(0, firstColon), ref: rest.slice(firstColon + 1) } : splitPathRef(rest);
  if (!path) throw new UserError(`${what}: "${s}" names no path`);
  return { transport: transport as 'oci' | 'oci-archive' | 'docker-archive', path, ref };
}

export function formatLocation(l: ImageLocation): string {
  if (l.transport === 'docker') return `docker://${l.ref}`;
  return `${l.transport}:${l.path}${l.ref ? `:${l.ref}` : ''}`;
}
