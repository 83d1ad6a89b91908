import { UserError } from '../errors.js';

/**
 * systemd image policies (systemd.image-policy(7)), evaluated like systemd's image-policy.c:
 * `designator=flag+flag:…`; an entry with an empty designator sets the default for unlisted
 * partitions, which is otherwise "ignore" (unused+absent); the special policies `*` (everything
 * allowed), `-` (everything ignored) and `~` (everything absent). Verity and signature partitions
 * without an entry of their own derive theirs from their data partition.
 */
export const POLICY_FLAGS = ['verity', 'signed', 'encrypted', 'unprotected', 'unused', 'absent'] as const;
export type PolicyFlag = (typeof POLICY_FLAGS)[number];
const DESIGNATORS = ['root', 'usr', 'home', 'srv', 'esp', 'xbootldr', 'swap', 'root-verity', 'root-verity-sig', 'usr-verity', 'usr-verity-sig', 'tmp', 'var'];

export interface ImagePolicy {
  text: string;
  /** Entries as written (before normalization). */
  rules: Map<string, Set<PolicyFlag>>;
  defaults: Set<PolicyFlag>;
}

/** Kairos without Trusted Boot (immucore): verity images only. */
export const KAIROS_POLICY = 'root=verity+absent:usr=verity+absent';
/** Kairos with Trusted Boot: signed verity images only. */
export const KAIROS_TRUSTED_BOOT_POLICY = 'root=signed+absent:usr=signed+absent';

const ALL: PolicyFlag[] = [...POLICY_FLAGS];
const OPEN: PolicyFlag[] = ['verity', 'signed', 'encrypted', 'unprotected'];
const IGNORE: PolicyFlag[] = ['unused', 'absent'];

function parseFlags(s: string, where: string): Set<PolicyFlag> {
  const out = new Set<PolicyFlag>();
  if (s.trim() === '' || s.trim() === '-') return out; // no use flags: "anything", see normalize()
  for (const raw of s.split('+')) {
    const f = raw.trim();
    if (f === 'open') OPEN.forEach((x) => out.add(x));
    else if (f === 'ignore') IGNORE.forEach((x) => out.add(x));
    else if ((POLICY_FLAGS as readonly string[]).includes(f)) out.add(f as PolicyFlag);
    else if (/^(read-only|growfs)-(on|off)$/.test(f))
      continue; // GPT flag rules: kbundle images set read-only, never growfs
    else throw new UserError(`${where}: unknown policy flag "${f}"`, `flags: ${[...POLICY_FLAGS, 'open', 'ignore'].join(', ')}`);
  }
  return out;
}

export function parseImagePolicy(text: string, where = '--image-policy'): ImagePolicy {
  const t = text.trim();
  if (t === '*') return { text, rules: new Map(), defaults: new Set(ALL) };
  if (t === '' || t === '-') return { text, rules: new Map(), defaults: new Set(IGNORE) };
  if (t === '~') return { text, rules: new Map(), defaults: new Set<PolicyFlag>(['absent']) };
  const rules = new Map<string, Set<PolicyFlag>>();
  let defaults: Set<PolicyFlag> | undefined;
  for (const part of t.split(':')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    if (eq < 0) throw new UserError(`${where}: "${part}" is not designator=flags`, `e.g. ${KAIROS_POLICY}`);
    const d = part.slice(0, eq).trim();
    const flags = parseFlags(part.slice(eq + 1), where);
    if (d === '') {
      if (defaults) throw new UserError(`${where}: the default (an entry without designator) is given twice`);
      defaults = flags;
    } else if (!DESIGNATORS.includes(d)) throw new UserError(`${where}: unknown partition designator "${d}"`, `designators: ${DESIGNATORS.join(', ')}`);
    else if (rules.has(d)) throw new UserError(`${where}: "${d}" is listed twice`);
    else rules.set(d, flags);
  }
  return { text, rules, defaults: defaults ?? new Set(IGNORE) };
}

/** The data designator a verity (`root-verity`) or signature (`root-verity-sig`) designator protects. */
function verityOf(designator: string): { data: string; sig: boolean } | undefined {
  const m = /^(root|usr)-verity(-sig)?$/.exec(designator);
  return m ? { data: m[1]!, sig: !!m[2] } : undefined;
}

/**
 * partition_policy_normalized_flags(): no use flag means every one; verity and signature
 * partitions cannot themselves be protected; only root and usr know verity at all.
 */
function normalize(flags: Set<PolicyFlag>, designator: string): Set<PolicyFlag> {
  const out = new Set(flags.size ? flags : ALL);
  if (verityOf(designator)) ['verity', 'signed', 'encrypted'].forEach((f) => out.delete(f as PolicyFlag));
  else if (designator !== 'root' && designator !== 'usr') ['verity', 'signed'].forEach((f) => out.delete(f as PolicyFlag));
  return out;
}

/** image_policy_get(): the entry for the designator, or one derived for verity partitions. */
function explicitOrDerived(p: ImagePolicy, designator: string): Set<PolicyFlag> | undefined {
  const own = p.rules.get(designator);
  if (own) return normalize(own, designator);
  const v = verityOf(designator);
  if (!v) return undefined;
  const data = explicitOrDerived(p, v.data);
  if (!data) return undefined;
  // A hash partition is wanted when the data may be verity or signed; a signature only for signed.
  if (v.sig ? !data.has('signed') : !data.has('signed') && !data.has('verity')) return undefined;
  return normalize(new Set<PolicyFlag>(['unprotected', ...IGNORE.filter((f) => data.has(f))]), designator);
}

/** image_policy_get_exhaustively(): what the policy allows for one designator (default included). */
export function policyFor(p: ImagePolicy, designator: string): Set<PolicyFlag> {
  return explicitOrDerived(p, designator) ?? normalize(p.defaults, designator);
}

/**
 * What systemd does with a partition of this designator that exists in the image
 * (image_policy_may_use()): refuse the image, ignore the partition, or use it.
 */
export function partitionUse(p: ImagePolicy, designator: string): 'refuse' | 'ignore' | 'use' {
  const f = policyFor(p, designator);
  const uses = [...f];
  if (uses.length === 1 && f.has('absent')) return 'refuse';
  if (uses.length > 0 && uses.every((x) => x === 'unused' || x === 'absent') && f.has('unused')) return 'ignore';
  return 'use';
}

export function formatFlags(s: Set<PolicyFlag>): string {
  return [...s].join('+') || '(nothing)';
}
