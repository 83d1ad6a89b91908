import { UserError } from '../errors.js';

/**
 * systemd image policies (systemd.image-policy(7)): `designator=flag+flag:…`, an empty designator
 * sets the default for unlisted partitions (which is otherwise "ignore"), and the special policies
 * `*` (everything allowed), `-` (everything unused or absent) and `~` (everything absent).
 */
export const POLICY_FLAGS = ['verity', 'signed', 'encrypted', 'unprotected', 'unused', 'absent'] as const;
export type PolicyFlag = (typeof POLICY_FLAGS)[number];
const DESIGNATORS = ['root', 'usr', 'home', 'srv', 'esp', 'xbootldr', 'swap', 'root-verity', 'root-verity-sig', 'usr-verity', 'usr-verity-sig', 'tmp', 'var'];

export interface ImagePolicy {
  text: string;
  rules: Map<string, Set<PolicyFlag>>;
  defaults: Set<PolicyFlag>;
}

/** Kairos without Trusted Boot (immucore): verity images only. */
export const KAIROS_POLICY = 'root=verity+absent:usr=verity+absent';
/** Kairos with Trusted Boot: signed verity images only. */
export const KAIROS_TRUSTED_BOOT_POLICY = 'root=signed+absent:usr=signed+absent';

const ALL: PolicyFlag[] = [...POLICY_FLAGS];

function parseFlags(s: string, where: string): Set<PolicyFlag> {
  const out = new Set<PolicyFlag>();
  for (const f of s.split('+')) {
    if (f === 'open') ['verity', 'signed', 'encrypted', 'unprotected'].forEach((x) => out.add(x as PolicyFlag));
    else if (f === 'ignore') ALL.forEach((x) => out.add(x));
    else if ((POLICY_FLAGS as readonly string[]).includes(f)) out.add(f as PolicyFlag);
    else if (/^(read-only|growfs)-(on|off)$/.test(f)) continue;
    else throw new UserError(`${where}: unknown policy flag "${f}"`, `flags: ${[...POLICY_FLAGS, 'open', 'ignore'].join(', ')}`);
  }
  return out;
}

export function parseImagePolicy(text: string, where = '--image-policy'): ImagePolicy {
  if (text === '*') return { text, rules: new Map(), defaults: new Set(ALL) };
  if (text === '-') return { text, rules: new Map(), defaults: new Set<PolicyFlag>(['unused', 'absent']) };
  if (text === '~') return { text, rules: new Map(), defaults: new Set<PolicyFlag>(['absent']) };
  const rules = new Map<string, Set<PolicyFlag>>();
  let defaults = new Set<PolicyFlag>(ALL);
  for (const part of text.split(':')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    if (eq < 0) throw new UserError(`${where}: "${part}" is not designator=flags`, `e.g. ${KAIROS_POLICY}`);
    const d = part.slice(0, eq);
    const flags = parseFlags(part.slice(eq + 1), where);
    if (d === '') defaults = flags;
    else if (!DESIGNATORS.includes(d)) throw new UserError(`${where}: unknown partition designator "${d}"`, `designators: ${DESIGNATORS.join(', ')}`);
    else if (rules.has(d)) throw new UserError(`${where}: "${d}" is listed twice`);
    else rules.set(d, flags);
  }
  return { text, rules, defaults };
}

export function policyFor(p: ImagePolicy, designator: string): Set<PolicyFlag> {
  return p.rules.get(designator) ?? p.defaults;
}

export function formatFlags(s: Set<PolicyFlag>): string {
  return [...s].join('+') || '(nothing)';
}
