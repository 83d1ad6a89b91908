import { readdir, readFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { UserError } from '../errors.js';
import { KINDS, type ExtensionKind } from '../kairos/extensions.js';

/**
 * The directories systemd-sysext overlays on a Kairos node. Kairos's systemd-sysext.service drop-in
 * (written at boot, `/etc/systemd/system/systemd-sysext.service.d/kairos.conf`, or `kairos-uki.conf`
 * under Trusted Boot) sets SYSTEMD_SYSEXT_HIERARCHIES to these, not systemd's default `/usr:/opt`:
 * a whole-/usr or /opt overlay would turn those read-only over the persistent bind mounts. An
 * extension's files anywhere else (/opt, /usr/libexec, /usr/local/etc, directly in /usr) are simply
 * not merged there. Confexts keep systemd's default, /etc.
 */
export const KAIROS_SYSEXT_HIERARCHIES = [
  '/usr/local/bin',
  '/usr/local/sbin',
  '/usr/local/include',
  '/usr/local/lib',
  '/usr/local/share',
  '/usr/local/src',
  '/usr/bin',
  '/usr/share',
  '/usr/lib',
  '/usr/include',
  '/usr/src',
  '/usr/sbin',
];

export function kairosHierarchies(kind: ExtensionKind): string[] {
  return kind === 'sysext' ? [...KAIROS_SYSEXT_HIERARCHIES] : KINDS[kind].hierarchies.map((h) => `/${h}`);
}

export function hierarchyVariable(kind: ExtensionKind): string {
  return kind === 'sysext' ? 'SYSTEMD_SYSEXT_HIERARCHIES' : 'SYSTEMD_CONFEXT_HIERARCHIES';
}

/** A colon-separated list as systemd takes it: absolute paths, none empty (else systemd refuses to merge). */
export function parseHierarchies(value: string, what: string): string[] {
  const parts = value.split(':');
  if (parts.some((p) => !p.startsWith('/'))) {
    throw new UserError(`${what}: "${value}" is not a list of absolute paths`, 'write it as systemd takes it, e.g. /usr/bin:/usr/lib:/usr/local/bin');
  }
  return [...new Set(parts.map((p) => posix.normalize(p).replace(/(.)\/$/, '$1')))];
}

type Place = 'inside' | 'above' | 'outside';

/** Where a relative path lies: inside a hierarchy, above one (usr, usr/local: traversed), or outside all. */
function placeOf(path: string, rel: string[]): Place {
  if (rel.some((h) => path === h || path.startsWith(`${h}/`))) return 'inside';
  if (rel.some((h) => h.startsWith(`${path}/`))) return 'above';
  return 'outside';
}

const relative = (hierarchies: string[]) => hierarchies.map((h) => h.replace(/^\/+/, ''));

/** Is this relative path (e.g. `usr/bin/k3s`) inside one of the hierarchies? */
export function insideHierarchies(path: string, hierarchies: string[]): boolean {
  return placeOf(path, relative(hierarchies)) === 'inside';
}

/**
 * The topmost paths of an image (relative, e.g. from unsquashfs -l) that no hierarchy covers:
 * systemd-sysext leaves them out of the merge. `opt/app/x` and `opt/app` collapse to `opt`.
 */
export function uncoveredPaths(paths: string[], hierarchies: string[]): string[] {
  const rel = relative(hierarchies);
  const out: string[] = [];
  for (const p of [...paths].sort()) {
    if (placeOf(p, rel) !== 'outside') continue;
    const parent = posix.dirname(p);
    if (parent !== '.' && placeOf(parent, rel) === 'outside') continue; // reported as its ancestor
    out.push(p);
  }
  return out;
}

/**
 * The same for a folder, reading only the directories above hierarchies (a few readdirs). `at`:
 * where the folder lands in the extension (default: it is the extension's root).
 */
export async function uncoveredInTree(tree: string, hierarchies: string[], at = ''): Promise<string[]> {
  const rel = relative(hierarchies);
  const base = at.replace(/^\/+|\/+$/g, '');
  if (base) {
    const place = placeOf(base, rel);
    if (place !== 'above') return place === 'inside' ? [] : [base];
  }
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of (await readdir(join(tree, dir), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const inTree = dir ? `${dir}/${e.name}` : e.name;
      const p = base ? `${base}/${inTree}` : inTree;
      const place = placeOf(p, rel);
      if (place === 'outside') out.push(p);
      else if (place === 'above' && e.isDirectory()) await walk(inTree);
    }
  };
  await walk('');
  return out;
}

/** What a node's systemd-sysext (confext) unit drop-ins set: its hierarchies and image policy. */
export interface UnitSettings {
  hierarchies?: string[];
  imagePolicy?: string;
  /** The drop-in files read, in the order systemd applies them. */
  files: string[];
}

/**
 * Split a unit-file value into words the way systemd does for Environment= and ExecStart=: blanks
 * separate words, double or single quotes (anywhere in a word) group and are removed, and a
 * backslash escapes the next character.
 */
function words(value: string): string[] {
  const out: string[] = [];
  let cur: string | undefined;
  let quote: string | undefined;
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === '\\' && i + 1 < value.length) {
      cur = (cur ?? '') + value[++i];
    } else if (quote) {
      if (c === quote) quote = undefined;
      else cur = (cur ?? '') + c;
    } else if (c === '"' || c === "'") {
      quote = c;
      cur ??= '';
    } else if (/\s/.test(c)) {
      if (cur !== undefined) out.push(cur);
      cur = undefined;
    } else cur = (cur ?? '') + c;
  }
  if (cur !== undefined) out.push(cur);
  return out;
}

/** `--image-policy=…` (or `--image-policy …`) of a command line, quotes removed. */
function imagePolicyOf(command: string): string | undefined {
  const w = words(command);
  let found: string | undefined;
  for (let i = 0; i < w.length; i++) {
    if (w[i]!.startsWith('--image-policy=')) found = w[i]!.slice('--image-policy='.length);
    else if (w[i] === '--image-policy' && i + 1 < w.length) found = w[i + 1];
  }
  return found;
}

/**
 * Read the node's drop-ins for systemd-sysext.service (systemd-confext.service) under `root`, the
 * way systemd combines them: `*.conf` from /usr/lib, /run and /etc (a file in /etc hides the one of
 * the same name in /run or /usr/lib), applied in file-name order; `Environment=` assignments add
 * up with the last one winning, an empty `ExecStart=` clears the list. Only the [Service] section
 * counts. Returns what the files set; nothing when the node has none (e.g. an offline root, since
 * Kairos writes them at boot).
 */
export async function readUnitSettings(root: string, kind: ExtensionKind): Promise<UnitSettings> {
  const unit = `${KINDS[kind].unit}.service.d`;
  const byName = new Map<string, string>();
  for (const dir of ['usr/lib/systemd/system', 'lib/systemd/system', 'run/systemd/system', 'etc/systemd/system']) {
    let names: string[];
    try {
      names = await readdir(join(root, dir, unit));
    } catch {
      continue;
    }
    for (const n of names) if (n.endsWith('.conf')) byName.set(n, join(dir, unit, n));
  }
  const variable = hierarchyVariable(kind);
  let env = new Map<string, string>();
  let execStart: string[] = [];
  const files: string[] = [];
  for (const name of [...byName.keys()].sort()) {
    const rel = byName.get(name)!;
    let text: string;
    try {
      text = await readFile(join(root, rel), 'utf8');
    } catch {
      continue;
    }
    files.push(`/${rel}`);
    let section = '';
    for (const raw of text.replace(/\\\n/g, ' ').split('\n')) {
      const line = raw.trim();
      if (!line || line.startsWith('#') || line.startsWith(';')) continue;
      if (line.startsWith('[')) {
        section = line;
        continue;
      }
      if (section !== '[Service]') continue;
      const eq = line.indexOf('=');
      if (eq < 0) continue;
      const key = line.slice(0, eq).trim();
      const value = line.slice(eq + 1).trim();
      if (key === 'Environment') {
        if (value === '') env = new Map();
        for (const w of words(value)) {
          const i = w.indexOf('=');
          if (i > 0) env.set(w.slice(0, i), w.slice(i + 1));
        }
      } else if (key === 'ExecStart') {
        execStart = value === '' ? [] : [...execStart, value];
      }
    }
  }
  const h = env.get(variable);
  const policies = execStart.map(imagePolicyOf).filter((p): p is string => p !== undefined);
  return {
    hierarchies: h === undefined ? undefined : parseHierarchies(h, `${variable} in ${files.join(', ')}`),
    imagePolicy: policies[policies.length - 1],
    files,
  };
}
