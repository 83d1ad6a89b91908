import { UserError } from '../errors.js';
import { parseDigest } from '../oci/digest.js';

/**
 * Image references as Docker, skopeo and cosign users write them:
 * `[host[:port]/]repo/path[:tag][@sha256:<hex>]`, with Docker Hub normalisation
 * (`alpine` → `docker.io/library/alpine:latest`). Grammar from distribution/reference.
 */
export interface ImageReference {
  /** Registry host as written (normalised for Docker Hub): `docker.io`, `127.0.0.1:5000`, `[::1]:5000`. */
  registry: string;
  /** Repository path inside the registry, e.g. `library/alpine`, `kairos/metallb`. */
  repository: string;
  tag?: string;
  digest?: string;
}

export const DOCKER_HUB = 'docker.io';
/** Where Docker Hub's registry API actually lives. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com']);

const MAX_NAME_LENGTH = 255;
const COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const HOST_LABEL = '(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])';
const HOST_RE = new RegExp(`^(?:${HOST_LABEL}(?:\\.${HOST_LABEL})*|\\[[0-9A-Fa-f:.]+\\])(?::[0-9]{1,5})?$`);

function bad(what: string, input: string, why: string, hint?: string): UserError {
  return new UserError(
    `${what}: "${input}" is not a valid image reference: ${why}`,
    hint ?? 'write it as [registry[:port]/]repository[:tag][@sha256:<digest>], e.g. 127.0.0.1:5000/kairos/metallb:0.14.9',
  );
}

/** A first path component is a registry host when it looks like one (Docker's rule). */
function looksLikeHost(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost' || component.startsWith('[') || component !== component.toLowerCase();
}

export function parseReference(input: string, what = 'reference'): ImageReference {
  let s = input.trim();
  if (s.startsWith('docker://')) s = s.slice('docker://'.length);
  if (!s) throw bad(what, input, 'it is empty');
  if (/\s/.test(s)) throw bad(what, input, 'it contains whitespace');
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) throw bad(what, input, 'it has a URL scheme', 'drop the scheme: write host/repository[:tag], e.g. 127.0.0.1:5000/repo:tag');

  let digest: string | undefined;
  const at = s.indexOf('@');
  if (at >= 0) {
    digest = s.slice(at + 1);
    s = s.slice(0, at);
    try {
      parseDigest(digest, `${what}: digest`);
    } catch (e) {
      throw bad(what, input, `the part after @ is not a digest (${(e as Error).message.replace(/^.*?: /, '')})`);
    }
  }

  const slash = s.indexOf('/');
  let registry = DOCKER_HUB;
  let path = s;
  if (slash > 0 && looksLikeHost(s.slice(0, slash))) {
    registry = s.slice(0, slash);
    path = s.slice(slash + 1);
    if (!HOST_RE.test(registry)) throw bad(what, input, `"${registry}" is not a valid registry host`);
    const port = /:(\d+)$/.exec(registry)?.[1];
    if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) throw bad(what, input, `port ${port} is out of range`);
  }
  if (slash === 0) throw bad(what, input, 'it starts with "/"');

  let tag: string | undefined;
  const lastSlash = path.lastIndexOf('/');
  const colon = path.indexOf(':', lastSlash + 1);
  if (colon >= 0) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!TAG_RE.test(tag)) throw bad(what, input, `tag "${tag}" is invalid (letters, digits, _ . -; at most 128; not starting with . or -)`);
  }
  if (!path) throw bad(what, input, 'it names no repository');
  if (path !== path.toLowerCase()) throw bad(what, input, 'repository names must be lowercase', `use "${path.toLowerCase()}"`);
  for (const c of path.split('/')) {
    if (!c) throw bad(what, input, 'the repository has an empty path component ("//" or a trailing "/")');
    if (!COMPONENT_RE.test(c)) throw bad(what, input, `repository component "${c}" may only hold a-z, 0-9 and single separators . _ __ -`);
  }

  if (DOCKER_HUB_ALIASES.has(registry)) {
    registry = DOCKER_HUB;
    if (!path.includes('/')) path = `library/${path}`;
  }
  if (`${registry}/${path}`.length > MAX_NAME_LENGTH) throw bad(what, input, `the name is longer than ${MAX_NAME_LENGTH} characters`);

  const ref: ImageReference = { registry, repository: path };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** `host/repo[:tag][@digest]` — the fully qualified form. */
export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/** `host/repo@sha256:…` — what push prints, pinned to exactly what was stored. */
export function pinnedReference(ref: ImageReference, digest: string): string {
  return `${ref.registry}/${ref.repository}@${digest}`;
}

/** What goes into `/v2/<repo>/manifests/<here>`: the digest when pinned, else the tag, else `latest`. */
export function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

/** The host the HTTP API is served from (Docker Hub's API is not on docker.io). */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : registry;
}

/** Host name without port or IPv6 brackets. */
export function hostname(registry: string): string {
  if (registry.startsWith('[')) return registry.slice(1, registry.indexOf(']'));
  const i = registry.lastIndexOf(':');
  return i >= 0 ? registry.slice(0, i) : registry;
}

/** localhost, 127.0.0.0/8 and ::1: registries on this machine, where plain HTTP is acceptable. */
export function isLoopback(registry: string): boolean {
  const h = hostname(registry).toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)) return true;
  return h === '::1' || h === '0:0:0:0:0:0:0:1';
}
