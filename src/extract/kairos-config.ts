/**
 * `kairos-agent config get <query>` as the node answers it, for run.sh under `--root`: a bundle
 * script asks the agent for its settings, and a dry run off the node must print exactly what the
 * node's agent would (kairos-agent `config get`, kairos-sdk `collector`).
 *
 * - Config files: `<root>/run/initramfs/live`, `<root>/etc/kairos`, `<root>/usr/local/cloud-config`,
 *   `<root>/oem`, in that order (writable paths last, so /oem wins), each walked in lexical order;
 *   only `*.yaml`/`*.yml`/`*userdata*` files up to 1 MiB with a `#cloud-config`, `#kairos-config`
 *   or `#node-config` first line count. Later files are deep-merged over earlier ones: maps key by
 *   key, lists of maps concatenated, lists of scalars unioned, other values replaced.
 * - The query is a gojq path (`a.b."k0s-worker"[0]`); `a.k0s-worker` fails as gojq's
 *   "function not defined: worker/0" does.
 * - Output is the value marshalled by yaml.v3 after a JSON round trip: missing → `null`, strings
 *   quoted only when they would read back as another type, numbers as Go's %g, maps with sorted
 *   keys and 4-space indent.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { parseYamlText, YAML_CAPS } from '../util/yaml.js';

const VALID_HEADERS = ['#cloud-config', '#kairos-config', '#node-config'];
const SCAN_DIRS = ['run/initramfs/live', 'etc/kairos', 'usr/local/cloud-config', 'oem'];

export type ConfigValue = null | boolean | number | string | ConfigValue[] | { [k: string]: ConfigValue };

/** A failure kairos-agent reports as `Error: …` with exit status 1. */
export class AgentQueryError extends Error {}

function walk(dir: string): { path: string; size: number }[] {
  let names: string[];
  try {
    names = readdirSync(dir).sort();
  } catch {
    return [];
  }
  const out: { path: string; size: number }[] = [];
  for (const n of names) {
    const p = join(dir, n);
    try {
      const st = statSync(p);
      if (st.isDirectory()) out.push(...walk(p));
      else if (st.isFile()) out.push({ path: p, size: st.size });
    } catch {
      /* vanished or unreadable: kairos-agent skips it too */
    }
  }
  return out;
}

function hasValidHeader(text: string): boolean {
  return VALID_HEADERS.includes(text.split('\n', 1)[0]!.replace(/\s+$/, ''));
}

function kind(v: unknown): string {
  if (v === null || v === undefined) return 'nil';
  if (Array.isArray(v)) return 'slice';
  return typeof v === 'object' ? 'map' : typeof v;
}

function deepMerge(a: ConfigValue, b: ConfigValue): ConfigValue {
  if (a === null) return b;
  if (b === null) return null;
  const ka = kind(a);
  const kb = kind(b);
  if (ka !== kb) {
    if (ka === 'map' || ka === 'slice' || kb === 'map' || kb === 'slice') throw new AgentQueryError(`cannot merge ${ka} with ${kb}`);
    return b;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length > 0 && kind(a[0]) === 'map') return [...a, ...b];
    const out = [...a];
    for (const vb of b) if (!out.some((va) => va === vb)) out.push(vb);
    return out;
  }
  if (ka === 'map') {
    const out: Record<string, ConfigValue> = { ...(a as Record<string, ConfigValue>) };
    for (const [k, v] of Object.entries(b as Record<string, ConfigValue>)) out[k] = k in out ? deepMerge(out[k]!, v) : v;
    return out;
  }
  return b;
}

/** One config document as kairos-sdk keeps it (JSON round trip), or undefined if it does not count. */
export function configDocument(text: string): ConfigValue | undefined {
  if (!hasValidHeader(text)) return undefined;
  let doc: unknown;
  try {
    doc = parseYamlText(text, 'config', YAML_CAPS.cloudConfig).value;
  } catch {
    doc = {};
  }
  if (doc === null || doc === undefined) doc = {};
  if (kind(doc) !== 'map') return undefined; // a list or scalar cannot become a Config
  return JSON.parse(JSON.stringify(doc)) as ConfigValue;
}

/** The merged configuration kairos-agent reads on a node whose root is `root`. */
export function collectKairosConfig(root: string): ConfigValue {
  let merged: ConfigValue = {};
  for (const d of SCAN_DIRS) {
    for (const f of walk(join(root, d))) {
      // Go: megabytes := float64(kilobytes / 1024) (integer division), skipped when > 1.0.
      if (Math.floor(Math.floor(f.size / 1024) / 1024) > 1) continue;
      if (!(f.path.includes('userdata') || f.path.endsWith('.yaml') || f.path.endsWith('.yml'))) continue;
      let text: string;
      try {
        text = readFileSync(f.path, 'utf8');
      } catch {
        continue;
      }
      const doc = configDocument(text);
      if (doc !== undefined) merged = deepMerge(merged, doc);
    }
  }
  return merged;
}

/**
 * What the agent of a node with root `root` would read if `cloudConfig` (the text given to
 * `install --config`) were one more config file on it, read last (as /oem files are).
 */
export function nodeConfigWith(root: string, cloudConfig?: string): ConfigValue {
  const base = collectKairosConfig(root);
  const extra = cloudConfig === undefined ? undefined : configDocument(cloudConfig);
  return extra === undefined ? base : deepMerge(base, extra);
}

/** Parse `a.b."c-d"[0]` (what follows gojq's leading "."). */
export function parseConfigQuery(q: string): (string | number)[] {
  const src = q.trim();
  if (src === '' || src === '.') return [];
  const segs: (string | number)[] = [];
  let i = src.startsWith('.') ? 1 : 0;
  let expectSegment = true;
  while (i < src.length) {
    const ch = src[i]!;
    if (expectSegment) {
      if (/[A-Za-z_]/.test(ch)) {
        let j = i + 1;
        while (j < src.length && /[A-Za-z0-9_]/.test(src[j]!)) j++;
        segs.push(src.slice(i, j));
        i = j;
      } else if (ch === '"') {
        let j = i + 1;
        let s = '';
        while (j < src.length && src[j] !== '"') {
          if (src[j] === '\\') j++;
          s += src[j] ?? '';
          j++;
        }
        if (j >= src.length) throw new AgentQueryError('unexpected token <EOF>');
        segs.push(s);
        i = j + 1;
      } else throw new AgentQueryError(`unexpected token ${JSON.stringify(ch)}`);
      expectSegment = false;
      continue;
    }
    if (ch === '.') {
      i++;
      expectSegment = true;
      continue;
    }
    if (ch === '[') {
      const m = /^\[(\d+)\]/.exec(src.slice(i));
      if (!m) throw new AgentQueryError(`unsupported query "${q}" (paths of keys and [index] only)`);
      segs.push(Number(m[1]));
      i += m[0].length;
      continue;
    }
    if (ch === '-') {
      // gojq: `.a-b` is `.a - b`; `b` is a call to an undefined function.
      const m = /^-\s*([A-Za-z_][A-Za-z0-9_]*)/.exec(src.slice(i));
      if (m) throw new AgentQueryError(`function not defined: ${m[1]}/0`);
    }
    throw new AgentQueryError(`unsupported query "${q}" (paths of keys and [index] only)`);
  }
  if (expectSegment) throw new AgentQueryError('unexpected token <EOF>');
  return segs;
}

export function lookupConfig(value: ConfigValue, segs: (string | number)[]): ConfigValue {
  let v: ConfigValue | undefined = value;
  for (const s of segs) {
    if (v === null || v === undefined) return null;
    if (typeof s === 'number') {
      if (!Array.isArray(v)) throw new AgentQueryError(`expected an array but got: ${kind(v) === 'map' ? 'object' : kind(v)}`);
      v = v[s];
    } else {
      if (kind(v) !== 'map') throw new AgentQueryError(`expected an object but got: ${kind(v) === 'slice' ? 'array' : kind(v)} (${JSON.stringify(v)})`);
      v = (v as Record<string, ConfigValue>)[s];
    }
  }
  return v === undefined ? null : v;
}

/** Go strconv.FormatFloat(f, 'g', -1, 64), as yaml.v3 prints a float64. */
function goFloat(f: number): string {
  if (Number.isNaN(f)) return '.nan';
  if (f === Infinity) return '.inf';
  if (f === -Infinity) return '-.inf';
  if (f === 0) return Object.is(f, -0) ? '-0' : '0';
  const [mant, expStr] = f.toExponential().split('e') as [string, string];
  const exp = Number(expStr);
  if (exp < -4 || exp >= 6) return `${mant}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  return String(f);
}

const YAML11_BOOLS = new Set(['y', 'Y', 'yes', 'Yes', 'YES', 'n', 'N', 'no', 'No', 'NO', 'on', 'On', 'ON', 'off', 'Off', 'OFF', 'true', 'True', 'TRUE', 'false', 'False', 'FALSE']);

export function marshalConfigValue(v: ConfigValue): string {
  if (v === null) return 'null\n';
  if (typeof v === 'number') return `${goFloat(v)}\n`;
  if (typeof v === 'boolean') return `${v}\n`;
  if (typeof v === 'string') {
    if (!v.includes('\n') && YAML11_BOOLS.has(v)) return `${JSON.stringify(v)}\n`;
    return stringify(v, { lineWidth: 0 });
  }
  return stringify(v, { indent: 4, sortMapEntries: true, lineWidth: 0 });
}

/** `kairos-agent <argv>` against `config`: what it prints and its exit status. */
export function kairosAgentAnswer(argv: string[], config: () => ConfigValue): { code: number; stdout: string; stderr: string } {
  const [cmd, sub, query, ...rest] = argv;
  if (cmd !== 'config' || (sub !== 'get' && sub !== 'g')) {
    return { code: 2, stdout: '', stderr: `kairos-agent (kbundle stand-in under --root): only "config get <query>" is answered (got: ${argv.join(' ')})\n` };
  }
  if (rest.length) return { code: 2, stdout: '', stderr: `kairos-agent (kbundle stand-in): unexpected arguments ${rest.join(' ')}\n` };
  try {
    return { code: 0, stdout: marshalConfigValue(lookupConfig(config(), parseConfigQuery(query ?? ''))), stderr: '' };
  } catch (e) {
    if (e instanceof AgentQueryError) return { code: 1, stdout: '', stderr: `Error: ${e.message}\n` };
    throw e;
  }
}
