import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join, relative } from 'node:path';

/**
 * Every path under `dir`, sorted → "d", "l -> target", or "f<octal mode>" (plus ":<content>"
 * when `content` is set), so tests can compare whole trees exactly.
 */
export function snapshotTree(dir: string, opts: { content?: boolean; modeMask?: number } = {}): Record<string, string> {
  const mask = opts.modeMask ?? 0o7777;
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      const rel = relative(dir, p);
      const st = lstatSync(p);
      if (st.isSymbolicLink()) out[rel] = `l -> ${readlinkSync(p)}`;
      else if (st.isDirectory()) {
        out[rel] = 'd';
        walk(p);
      } else out[rel] = `f${(st.mode & mask).toString(8)}${opts.content ? `:${readFileSync(p, 'utf8')}` : ''}`;
    }
  };
  walk(dir);
  return out;
}
