/**
 * The one way kbundle reads YAML it did not write (bundle.yaml, Kairos cloud-configs, trust
 * policies): bounded before, during and after parsing.
 *
 * - the file is a regular file no larger than the cap (src/util/read-file.ts);
 * - aliases are limited (`maxAliasCount`, yaml's guard against "billion laughs");
 * - the parsed value may hold at most `maxNodes` values and `maxDepth` levels once aliases are
 *   expanded — a few aliases of a large list stay under any alias count but not under this;
 * - yaml's "pretty" errors are off: on deeply nested input (10,000 brackets) their context
 *   printing has aborted the whole process out of memory, which no try/catch sees; the line
 *   and column are computed here instead.
 *
 * Every failure is an INVALID_INPUT error naming the file (and line when there is one).
 */
import { LineCounter, parseAllDocuments, parseDocument, type Document } from 'yaml';
import { UserError } from '../errors.js';
import { readTextFileCapped } from './read-file.js';

export interface YamlLimits {
  /** Largest file or text accepted, in bytes. */
  maxBytes: number;
  /** yaml's alias guard (default 50). */
  maxAliasCount?: number;
  /** Values in the expanded document (default 1,000,000). */
  maxNodes?: number;
  /** Nesting depth of the expanded document (default 200). */
  maxDepth?: number;
  /** Refuse duplicate keys in a mapping (default true). */
  uniqueKeys?: boolean;
}

/** Caps per kind of document: generous for real files, far below what hurts. */
export const YAML_CAPS = {
  bundleSpec: { maxBytes: 4 * 1024 * 1024 },
  cloudConfig: { maxBytes: 16 * 1024 * 1024 },
  policy: { maxBytes: 1024 * 1024 },
} as const satisfies Record<string, YamlLimits>;

/** Stop counting here: refusing a document costs at most this many steps. */
function checkShape(value: unknown, what: string, maxNodes: number, maxDepth: number): void {
  const stack: Array<[unknown, number]> = [[value, 1]];
  let nodes = 0;
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (++nodes > maxNodes) throw new UserError(`${what}: the YAML expands to more than ${maxNodes} values`, 'aliases (*name) that repeat large parts of a document are refused; write the values out');
    if (depth > maxDepth) throw new UserError(`${what}: the YAML is nested deeper than ${maxDepth} levels`);
    if (v === null || typeof v !== 'object') continue;
    if (Array.isArray(v)) for (const x of v) stack.push([x, depth + 1]);
    else if (v instanceof Map) for (const [k, x] of v) stack.push([k, depth + 1], [x, depth + 1]);
    else if (v instanceof Set) for (const x of v) stack.push([x, depth + 1]);
    else for (const x of Object.values(v)) stack.push([x, depth + 1]);
  }
}

export interface ParsedYaml {
  doc: Document;
  value: unknown;
}

/** Parse YAML text within the limits; `what` names the file in messages. */
export function parseYamlText(text: string, what: string, limits: YamlLimits): ParsedYaml {
  checkSize(text, what, limits);
  const lines = new LineCounter();
  let doc: Document;
  try {
    doc = parseDocument(text, { prettyErrors: false, uniqueKeys: limits.uniqueKeys ?? true, lineCounter: lines });
  } catch (e) {
    throw new UserError(`${what}: invalid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  const value = documentValue(doc, lines, what, limits);
  checkShape(value, what, limits.maxNodes ?? 1_000_000, limits.maxDepth ?? 200);
  return { doc, value };
}

/** Every document of a multi-document stream (`---`), within the same limits (counted over all). */
export function parseYamlDocuments(text: string, what: string, limits: YamlLimits): unknown[] {
  checkSize(text, what, limits);
  const lines = new LineCounter();
  let docs: Document[];
  try {
    const parsed = parseAllDocuments(text, { prettyErrors: false, uniqueKeys: limits.uniqueKeys ?? true, lineCounter: lines });
    docs = Array.isArray(parsed) ? parsed : [parsed as unknown as Document];
  } catch (e) {
    throw new UserError(`${what}: invalid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  const values = docs.map((d) => documentValue(d, lines, what, limits));
  checkShape(values, what, limits.maxNodes ?? 1_000_000, (limits.maxDepth ?? 200) + 1);
  return values;
}

function checkSize(text: string, what: string, limits: YamlLimits): void {
  const size = Buffer.byteLength(text);
  if (size > limits.maxBytes) throw new UserError(`${what}: ${size} bytes, over the ${limits.maxBytes}-byte limit for this file`);
}

function documentValue(doc: Document, lines: LineCounter, what: string, limits: YamlLimits): unknown {
  const first = doc.errors[0];
  if (first) {
    const at = first.pos ? lines.linePos(first.pos[0]) : undefined;
    const msg = first.message.split('\n')[0]!;
    throw new UserError(`${what}: invalid YAML${at ? ` (line ${at.line}, column ${at.col})` : ''}: ${/call stack/i.test(msg) ? 'nested too deeply' : msg}`);
  }
  try {
    return doc.toJS({ maxAliasCount: limits.maxAliasCount ?? 50 });
  } catch (e) {
    const m = (e as Error).message;
    if (/alias/i.test(m)) throw new UserError(`${what}: the YAML uses aliases (*name) too many times (${m})`, 'aliases that repeat parts of a document are limited; write the values out');
    throw new UserError(`${what}: invalid YAML: ${m.split('\n')[0]}`);
  }
}

/** Read and parse a YAML file within the limits. */
export async function readYamlFile(path: string, limits: YamlLimits, what = path): Promise<ParsedYaml & { text: string }> {
  const text = await readTextFileCapped(path, limits.maxBytes, what);
  return { text, ...parseYamlText(text, what, limits) };
}
