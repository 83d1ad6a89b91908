import { UserError } from '../errors.js';

/**
 * A Dockerfile reader, enough to translate kairos-io/community-bundles folders: parser
 * directives (`# escape=`), comments, line continuations, heredocs (`RUN <<EOF … EOF`), JSON
 * ("exec") and shell forms, `--flag=value` options, and stages (`FROM image [AS name]`).
 * It never runs anything; the translator decides what is allowed.
 */

export interface Instruction {
  /** Upper-case keyword: FROM, COPY, RUN, … */
  keyword: string;
  /** `--name=value` options before the arguments (a bare `--link` has value "true"). */
  flags: Record<string, string>;
  /** Arguments after the flags: JSON form as given, shell form split on whitespace. */
  args: string[];
  /** The instruction as written (continuations joined), for messages. */
  text: string;
  /** 1-based line where it starts. */
  line: number;
  /** Heredoc bodies (`<<EOF`), when the instruction has any. */
  heredocs: string[];
}

export interface Stage {
  /** 0-based position; `COPY --from=0` refers to it. */
  index: number;
  name?: string;
  /** The FROM image (`scratch` for an empty base). */
  base: string;
  from: Instruction;
  instructions: Instruction[];
}

export interface Dockerfile {
  path: string;
  /** ARG lines before the first FROM (global build arguments). */
  globalArgs: Instruction[];
  stages: Stage[];
}

const HEREDOC_RE = /<<(-?)(["']?)([A-Za-z_][A-Za-z0-9_]*)\2/g;

/** Split shell-form arguments on whitespace, keeping quoted strings together (quotes removed). */
function splitWords(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quote: string | undefined;
  let has = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      has = true;
    } else if (/\s/.test(c)) {
      if (has || cur) out.push(cur);
      cur = '';
      has = false;
    } else {
      cur += c;
      has = true;
    }
  }
  if (has || cur) out.push(cur);
  return out;
}

export function parseDockerfile(text: string, path: string): Dockerfile {
  const lines = text.split(/\r?\n/);
  let escape = '\\';
  // Parser directives: only at the very top, before any other line (comment or not).
  let i = 0;
  for (; i < lines.length; i++) {
    const m = /^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$/.exec(lines[i]!);
    if (!m) break;
    if (m[1]!.toLowerCase() === 'escape') {
      if (m[2] !== '\\' && m[2] !== '`') throw new UserError(`${path}:${i + 1}: escape must be \\ or \``);
      escape = m[2]!;
    }
  }
  const instructions: Instruction[] = [];
  while (i < lines.length) {
    const start = i;
    let raw = lines[i++]!;
    if (/^\s*(#|$)/.test(raw)) continue;
    // Continuations: a line ending in the escape character goes on; comment lines inside are dropped.
    while (raw.trimEnd().endsWith(escape) && i < lines.length) {
      raw = raw.trimEnd().slice(0, -1);
      const next = lines[i++]!;
      if (/^\s*#/.test(next)) {
        raw += escape; // keep continuing past the comment
        continue;
      }
      raw += ' ' + next;
    }
    const m = /^\s*([A-Za-z]+)(?:\s+([\s\S]*))?$/.exec(raw);
    if (!m) throw new UserError(`${path}:${start + 1}: cannot read this line: ${raw.trim()}`, 'each instruction starts with a keyword such as FROM or COPY');
    const keyword = m[1]!.toUpperCase();
    let rest = (m[2] ?? '').trim();
    const heredocs: string[] = [];
    for (const h of rest.matchAll(HEREDOC_RE)) {
      const body: string[] = [];
      let closed = false;
      while (i < lines.length) {
        const l = lines[i++]!;
        if ((h[1] ? l.replace(/^\t+/, '') : l) === h[3]) {
          closed = true;
          break;
        }
        body.push(l);
      }
      if (!closed) throw new UserError(`${path}:${start + 1}: the heredoc <<${h[3]} is never closed`, `end it with a line holding only ${h[3]}`);
      heredocs.push(body.join('\n'));
    }
    const flags: Record<string, string> = {};
    // Options come first: --from=build, --chmod=0755, --link.
    for (;;) {
      const f = /^--([a-zA-Z-]+)(?:=("[^"]*"|\S*))?(?:\s+|$)/.exec(rest);
      if (!f) break;
      flags[f[1]!] = f[2] === undefined ? 'true' : f[2].replace(/^"|"$/g, '');
      rest = rest.slice(f[0].length);
    }
    let args: string[];
    if (rest.startsWith('[')) {
      try {
        const parsed = JSON.parse(rest) as unknown;
        if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) throw new Error('not a list of strings');
        args = parsed;
      } catch {
        args = splitWords(rest);
      }
    } else {
      args = splitWords(rest);
    }
    instructions.push({ keyword, flags, args, text: raw.trim().replace(/\s+/g, ' '), line: start + 1, heredocs });
  }

  const df: Dockerfile = { path, globalArgs: [], stages: [] };
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const [base, as, name, ...more] = ins.args;
      if (!base || (as !== undefined && (as.toUpperCase() !== 'AS' || !name)) || more.length) {
        throw new UserError(`${path}:${ins.line}: ${ins.text}: expected FROM <image> [AS <name>]`);
      }
      df.stages.push({ index: df.stages.length, name: name?.toLowerCase(), base, from: ins, instructions: [] });
    } else if (df.stages.length === 0) {
      if (ins.keyword !== 'ARG') throw new UserError(`${path}:${ins.line}: ${ins.keyword} before the first FROM`, 'only ARG may come before FROM');
      df.globalArgs.push(ins);
    } else {
      df.stages.at(-1)!.instructions.push(ins);
    }
  }
  if (df.stages.length === 0) throw new UserError(`${path}: no FROM instruction`, 'a community bundle Dockerfile ends with a FROM scratch stage that COPYs run.sh and assets');
  return df;
}
