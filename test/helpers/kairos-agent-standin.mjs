#!/usr/bin/env node
/**
 * A stand-in for `kairos-agent config get <query>`, for tests that run bundle scripts off-node.
 *
 * What it mirrors (kairos-agent `config get`, kairos-sdk `collector`):
 * - Scans, in this order, `<root>/run/initramfs/live`, `<root>/etc/kairos`,
 *   `<root>/usr/local/cloud-config` and `<root>/oem` (kairos-agent `constants.GetUserConfigDirs()`:
 *   "writable paths are last" so /oem overrides /usr/local/cloud-config). `<root>` is `$KBUNDLE_ROOT`
 *   (default `/`). Each folder is walked recursively in lexical order (Go `filepath.Walk`).
 * - Only `*.yaml`, `*.yml` or names containing `userdata` count, only under 1 MiB, and only with a
 *   valid first line: `#cloud-config`, `#kairos-config` or `#node-config` (trailing blanks ignored).
 * - Later files are deep-merged over earlier ones (collector `DeepMerge`): maps merge key by key,
 *   lists of maps are concatenated, lists of scalars are unioned, any other value is replaced;
 *   merging a map with a list (or other kinds) is an error.
 * - The query is a jq expression prefixed with "." (gojq): this stand-in accepts paths of
 *   identifiers (`[A-Za-z_][A-Za-z0-9_]*`), quoted keys (`"k0s-worker"`) and list indexes (`[0]`).
 *   A bare segment with other characters fails like gojq does: `k0s-worker.enabled` parses as
 *   `.k0s - worker.enabled` and errors with "function not defined: worker/0".
 * - Output is each result marshalled as YAML (yaml.v3, after a JSON round trip): missing → `null`,
 *   strings plain unless they would read back as another type (then double-quoted), numbers as Go
 *   `strconv.FormatFloat(f, 'g', -1, 64)` (so 1000000 prints `1e+06`), maps/lists as block YAML with
 *   4-space indent and sorted keys.
 *
 * Not mirrored: `config_url` fetching, the kernel command line, strict validation.
 * Exit status: 0 with the value on stdout; 1 with `Error: …` on stderr for a bad query or a config
 * that cannot be merged.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';

const VALID_HEADERS = ['#cloud-config', '#kairos-config', '#node-config'];
const SCAN_DIRS = ['run/initramfs/live', 'etc/kairos', 'usr/local/cloud-config', 'oem'];

class AgentError extends Error {}

function walk(dir) {
  let names;
  try {
    names = readdirSync(dir).sort();
  } catch {
    return [];
  }
  const out = [];
  for (const n of names) {
    const p = join(dir, n);
    let st;
    try {
      st = statSync(p);
    } catch {
      continue;
    }
    if (st.isDirectory()) out.push(...walk(p));
    else out.push({ path: p, size: st.size });
  }
  return out;
}

function hasValidHeader(text) {
  const first = text.split('\n', 1)[0].replace(/\s+$/, '');
  return VALID_HEADERS.includes(first);
}

function kind(v) {
  if (v === null || v === undefined) return 'nil';
  if (Array.isArray(v)) return 'slice';
  if (typeof v === 'object') return 'map';
  return typeof v;
}

function deepMerge(a, b) {
  if ((a === null || a === undefined) && b !== undefined) return b;
  if (b === null || b === undefined) return b ?? null;
  const ka = kind(a);
  const kb = kind(b);
  if (ka !== kb) {
    // Go compares reflect kinds: float64 vs string vs bool differ too, but only maps/slices matter here.
    if (ka === 'map' || ka === 'slice' || kb === 'map' || kb === 'slice') throw new AgentError(`cannot merge ${ka} with ${kb}`);
    return b;
  }
  if (ka === 'slice') {
    if (a.length > 0 && kind(a[0]) === 'map') return [...a, ...b];
    const out = [...a];
    for (const vb of b) if (!out.some((va) => va === vb)) out.push(vb);
    return out;
  }
  if (ka === 'map') {
    const out = { ...a };
    for (const [k, v] of Object.entries(b)) out[k] = k in out ? deepMerge(out[k], v) : v;
    return out;
  }
  return b;
}

function collect(root) {
  let merged = {};
  for (const d of SCAN_DIRS) {
    for (const f of walk(join(root, d))) {
      // Go: megabytes := float64(kilobytes / 1024) (integer division), skipped when > 1.0.
      if (Math.floor(Math.floor(f.size / 1024) / 1024) > 1) continue;
      if (!(f.path.includes('userdata') || f.path.endsWith('.yaml') || f.path.endsWith('.yml'))) continue;
      let text;
      try {
        text = readFileSync(f.path, 'utf8');
      } catch {
        continue;
      }
      if (!hasValidHeader(text)) continue;
      let doc;
      try {
        doc = parse(text);
      } catch {
        doc = {};
      }
      if (doc === null || doc === undefined) doc = {};
      if (kind(doc) !== 'map') continue; // a plain list or scalar cannot become a Config
      // JSON round trip as kairos-sdk does (numbers become float64, keys strings).
      merged = deepMerge(merged, JSON.parse(JSON.stringify(doc)));
    }
  }
  return merged;
}

/** Parse `a.b."c-d"[0]` (the part after the implicit leading "."). */
function parseQuery(q) {
  const src = q.trim();
  if (src === '' || src === '.') return [];
  const segs = [];
  let i = 0;
  const identStart = /[A-Za-z_]/;
  const identTail = /[A-Za-z0-9_]/;
  let expectSegment = true;
  while (i < src.length) {
    const ch = src[i];
    if (expectSegment) {
      if (identStart.test(ch)) {
        let j = i + 1;
        while (j < src.length && identTail.test(src[j])) j++;
        segs.push(src.slice(i, j));
        i = j;
      } else if (ch === '"') {
        let j = i + 1;
        let s = '';
        while (j < src.length && src[j] !== '"') {
          if (src[j] === '\\') j++;
          s += src[j];
          j++;
        }
        if (j >= src.length) throw new AgentError(`unexpected token <EOF>`);
        segs.push(s);
        i = j + 1;
      } else {
        throw new AgentError(`unexpected token ${JSON.stringify(ch)}`);
      }
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
      if (!m) throw new AgentError(`unsupported query "${q}" (kairos-agent stand-in knows paths only)`);
      segs.push(Number(m[1]));
      i += m[0].length;
      continue;
    }
    if (ch === '-') {
      // gojq: `.a-b` is `.a - b`; `b` is a call to an undefined function.
      const m = /^-\s*([A-Za-z_][A-Za-z0-9_]*)/.exec(src.slice(i));
      if (m) throw new AgentError(`function not defined: ${m[1]}/0`);
    }
    throw new AgentError(`unsupported query "${q}" (kairos-agent stand-in knows paths only)`);
  }
  if (expectSegment) throw new AgentError('unexpected token <EOF>');
  return segs;
}

function lookup(value, segs) {
  let v = value;
  for (const s of segs) {
    if (v === null || v === undefined) return null;
    if (typeof s === 'number') {
      if (!Array.isArray(v)) throw new AgentError(`expected an array but got: ${kind(v) === 'map' ? 'object' : kind(v)}`);
      v = v[s];
    } else {
      if (kind(v) !== 'map') throw new AgentError(`expected an object but got: ${kind(v) === 'slice' ? 'array' : kind(v)} (${JSON.stringify(v)})`);
      v = v[s];
    }
  }
  return v === undefined ? null : v;
}

/** Go strconv.FormatFloat(f, 'g', -1, 64), as yaml.v3 prints float64. */
function goFloat(f) {
  if (Number.isNaN(f)) return '.nan';
  if (f === Infinity) return '.inf';
  if (f === -Infinity) return '-.inf';
  if (f === 0) return Object.is(f, -0) ? '-0' : '0';
  const [mant, expStr] = f.toExponential().split('e');
  const exp = Number(expStr);
  if (exp < -4 || exp >= 6) {
    const sign = exp < 0 ? '-' : '+';
    const e = String(Math.abs(exp)).padStart(2, '0');
    return `${mant}e${sign}${e}`;
  }
  return String(f);
}

const OLD_BOOLS = new Set(['y', 'Y', 'yes', 'Yes', 'YES', 'n', 'N', 'no', 'No', 'NO', 'on', 'On', 'ON', 'off', 'Off', 'OFF', 'true', 'True', 'TRUE', 'false', 'False', 'FALSE']);

function marshal(v) {
  if (v === null || v === undefined) return 'null\n';
  if (typeof v === 'number') return `${goFloat(v)}\n`;
  if (typeof v === 'boolean') return `${v}\n`;
  if (typeof v === 'string') {
    if (!v.includes('\n') && OLD_BOOLS.has(v)) return `${JSON.stringify(v)}\n`;
    return stringify(v, { lineWidth: 0 });
  }
  return stringify(v, { indent: 4, sortMapEntries: true, lineWidth: 0 });
}

function main(argv) {
  const [cmd, sub, query, ...rest] = argv;
  if (cmd !== 'config' || (sub !== 'get' && sub !== 'g')) {
    process.stderr.write(`kairos-agent stand-in: only "config get <query>" is supported (got: ${argv.join(' ')})\n`);
    return 2;
  }
  if (rest.length) {
    process.stderr.write(`kairos-agent stand-in: unexpected arguments ${rest.join(' ')}\n`);
    return 2;
  }
  const root = process.env.KBUNDLE_ROOT || '/';
  try {
    const segs = parseQuery(query ?? '');
    const config = collect(root);
    process.stdout.write(marshal(lookup(config, segs)));
    return 0;
  } catch (e) {
    if (e instanceof AgentError) {
      process.stderr.write(`Error: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}

process.exitCode = main(process.argv.slice(2));
