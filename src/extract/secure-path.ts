import { lstatSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';
import { UserError } from '../errors.js';

const MAX_SYMLINK_HOPS = 255;

/**
 * Clean an archive entry name into root-relative components. `..` that would climb above the
 * root is refused (not clamped): a well-formed image never needs it, and containerd refuses it too.
 */
export function entryComponents(name: string, what: string): string[] {
  const parts: string[] = [];
  for (const p of name.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') {
      if (parts.length === 0) throw new UserError(`${what}: entry "${name}" climbs out of the root with ".."`, 'the image is malformed or hostile; nothing outside the root was touched');
      parts.pop();
      continue;
    }
    parts.push(p);
  }
  return parts;
}

/**
 * securejoin semantics: resolve `components` under `root`, following every symlink met on the
 * way (except the final component unless `followFinal`) *as if `root` were `/`*: absolute
 * targets restart at root and `..` never climbs above it. The result always lies inside root.
 * Synchronous: extraction makes thousands of these calls and each thread-pool hop costs.
 */
export function resolveInRoot(root: string, components: string[], followFinal = false): string {
  const todo = [...components];
  const done: string[] = [];
  let hops = 0;
  while (todo.length) {
    const part = todo.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      done.pop();
      continue;
    }
    const isFinal = todo.length === 0;
    if (isFinal && !followFinal) {
      done.push(part);
      break;
    }
    const candidate = posix.join(root, ...done, part);
    let st;
    try {
      st = lstatSync(candidate);
    } catch {
      done.push(part);
      continue;
    }
    if (!st.isSymbolicLink()) {
      done.push(part);
      continue;
    }
    if (++hops > MAX_SYMLINK_HOPS) throw new UserError(`too many levels of symbolic links under ${root} at ${posix.join(...done, part)}`);
    const target = readlinkSync(candidate);
    if (target.startsWith('/')) done.length = 0;
    todo.unshift(...target.split('/'));
  }
  return posix.join(root, ...done);
}

/**
 * Resolved parent directories, keyed by their path inside the image. Only valid while nothing
 * but the applier changes the tree: entries that could change what a path resolves to (a
 * symlink, a file or directory replacing something) invalidate that path and everything below.
 */
export class ResolvedDirs {
  private readonly cache = new Map<string, string>();
  constructor(private readonly root: string) {}

  resolve(rel: string): string {
    if (rel === '') return this.root;
    let hit = this.cache.get(rel);
    if (hit === undefined) {
      hit = resolveInRoot(this.root, rel.split('/'), true);
      this.cache.set(rel, hit);
    }
    return hit;
  }

  invalidate(rel: string): void {
    const prefix = `${rel}/`;
    for (const k of this.cache.keys()) if (k === rel || k.startsWith(prefix)) this.cache.delete(k);
  }
}
