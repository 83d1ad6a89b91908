import { UserError } from '../errors.js';
import { header, locationUrl, unexpected } from './client.js';
import type { ManifestContext } from './manifests.js';

const PAGE_SIZE = 1000;
const MAX_PAGES = 10_000;
const MAX_PAGE_BYTES = 16 << 20;

/** `<url>; rel="next"` from an RFC 8288 Link header. */
export function nextLink(link: string | undefined): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(/,(?=\s*<)/)) {
    const m = /<([^>]*)>\s*;(.*)$/.exec(part.trim());
    if (m && /rel="?next"?/i.test(m[2]!)) return m[1];
  }
  return undefined;
}

/**
 * Every tag of a repository, sorted. Follows `Link: rel="next"` pages, but does not trust the
 * server to honour `n`/`last` (registry 2.8 ignores both): repeated pages stop the walk.
 */
export async function listTags(ctx: ManifestContext, pageSize = PAGE_SIZE): Promise<string[]> {
  const seen = new Set<string>();
  const visited = new Set<string>();
  let path: string | undefined = `/v2/${ctx.repository}/tags/list?n=${pageSize}`;
  for (let page = 0; path && page < MAX_PAGES; page++) {
    const { res, bytes } = await ctx.session.sendAndRead({ method: 'GET', path, scopes: ctx.scopes, operation: 'list tags' }, MAX_PAGE_BYTES, `${ctx.name}: tag list`, (r) => r.status === 200);
    if (res.status === 404) {
      const err = await unexpected(ctx.session.registry, res, 'list tags');
      if (err.hasCode('NAME_UNKNOWN') || err.codes.length === 0) return [];
      throw err;
    }
    if (res.status !== 200 || !bytes) throw await unexpected(ctx.session.registry, res, 'list tags');
    const text = bytes.toString('utf8');
    let tags: unknown;
    try {
      tags = (JSON.parse(text) as { tags?: unknown }).tags;
    } catch {
      throw new UserError(`${ctx.name}: the tag list is not JSON`);
    }
    if (tags !== null && tags !== undefined && !Array.isArray(tags)) throw new UserError(`${ctx.name}: the tag list has no "tags" array`);
    let fresh = 0;
    for (const t of (tags ?? []) as unknown[]) {
      if (typeof t === 'string' && !seen.has(t)) {
        seen.add(t);
        fresh++;
      }
    }
    const next = nextLink(header(res, 'link'));
    if (!next || fresh === 0) break;
    const abs = locationUrl(res, next, ctx.session.registry, 'list tags: Link');
    if (visited.has(abs)) break;
    visited.add(abs);
    path = abs;
  }
  return [...seen].sort();
}
