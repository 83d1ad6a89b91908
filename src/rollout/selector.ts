/**
 * `--selector`: Kubernetes label selector syntax (kubectl -l), turned into the metav1.LabelSelector
 * a NodeOp's nodeSelector holds. Grammar of k8s.io/apimachinery labels.Parse, limited to what a
 * LabelSelector can say: `k=v`, `k==v` (matchLabels), `k!=v`, `k in (a,b)`, `k notin (a,b)`,
 * `k` (Exists), `!k` (DoesNotExist). `k>1`/`k<1` parse in kubectl but have no LabelSelector form.
 */
import { UserError } from '../errors.js';

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

export interface SelectorRequirement {
  key: string;
  operator: SelectorOperator;
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: SelectorRequirement[];
}

const NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Why `key` is not a valid label key (qualified name), or undefined. */
export function checkLabelKey(key: string): string | undefined {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && (prefix.length === 0 || prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix)))
    return `label key "${key}": the prefix must be a DNS subdomain (lowercase, at most 253 characters)`;
  if (!name || name.length > 63 || !NAME.test(name)) return `label key "${key}": the name must be 1-63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit`;
  return undefined;
}

/** Why `value` is not a valid label value, or undefined. */
export function checkLabelValue(value: string): string | undefined {
  if (value === '') return undefined;
  if (value.length > 63 || !NAME.test(value)) return `label value "${value}": at most 63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit`;
  return undefined;
}

function bad(input: string, part: string, why: string): UserError {
  return new UserError(
    `--selector "${input}": ${part ? `"${part.trim()}": ` : ''}${why}`,
    'write it as kubectl -l does: key=value, key!=value, key in (a,b), key notin (a,b), key, !key; separate requirements with ","',
  );
}

/** Split on commas outside parentheses. */
function splitRequirements(input: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of input) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (depth < 0) throw bad(input, '', 'unbalanced ")"');
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (depth !== 0) throw bad(input, '', 'unbalanced "("');
  parts.push(cur);
  return parts;
}

/** Parse one or more selector strings (ANDed) into a LabelSelector. */
export function parseSelector(inputs: string[]): LabelSelector {
  const matchLabels: Record<string, string> = {};
  const matchExpressions: SelectorRequirement[] = [];
  for (const input of inputs) {
    for (const part of splitRequirements(input)) {
      const p = part.trim();
      if (!p) throw bad(input, part, 'empty requirement');
      let m: RegExpExecArray | null;
      const key = (k: string) => {
        const e = checkLabelKey(k);
        if (e) throw bad(input, part, e);
        return k;
      };
      const value = (v: string) => {
        const e = checkLabelValue(v);
        if (e) throw bad(input, part, e);
        return v;
      };
      if ((m = /^([^\s=!<>(),]+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(p))) {
        const values = m[3]!
          .split(',')
          .map((v) => v.trim())
          .map(value);
        if (values.length === 0 || (values.length === 1 && values[0] === '')) throw bad(input, part, `${m[2]} needs at least one value`);
        matchExpressions.push({ key: key(m[1]!), operator: m[2] === 'in' ? 'In' : 'NotIn', values: [...new Set(values)] });
      } else if ((m = /^([^\s=!<>(),]+)\s*(==|=|!=)\s*([^\s=!<>(),]*)$/.exec(p))) {
        const k = key(m[1]!);
        const v = value(m[3]!);
        if (m[2] === '!=') matchExpressions.push({ key: k, operator: 'NotIn', values: [v] });
        else if (k in matchLabels && matchLabels[k] !== v) throw bad(input, part, `${k} is already required to be "${matchLabels[k]}": no node can match both`);
        else matchLabels[k] = v;
      } else if ((m = /^(!?)\s*([^\s=!<>(),]+)$/.exec(p))) {
        matchExpressions.push({ key: key(m[2]!), operator: m[1] ? 'DoesNotExist' : 'Exists' });
      } else if (/^[^\s=!<>(),]+\s*[<>]/.test(p)) {
        throw bad(input, part, 'numeric comparisons (< and >) cannot be written in a NodeOp nodeSelector (a metav1.LabelSelector)');
      } else throw bad(input, part, 'unknown selector syntax');
    }
  }
  return {
    ...(Object.keys(matchLabels).length ? { matchLabels } : {}),
    ...(matchExpressions.length ? { matchExpressions } : {}),
  };
}

/** Both selectors must hold: labels merged (a conflict is an error), expressions appended. */
export function andSelectors(a: LabelSelector, b: LabelSelector, what: string): LabelSelector {
  const matchLabels = { ...a.matchLabels };
  for (const [k, v] of Object.entries(b.matchLabels ?? {})) {
    if (k in matchLabels && matchLabels[k] !== v) throw new UserError(`${what}: ${k} must be both "${matchLabels[k]}" and "${v}"; no node can match`);
    matchLabels[k] = v;
  }
  const matchExpressions = [...(a.matchExpressions ?? []), ...(b.matchExpressions ?? [])];
  return {
    ...(Object.keys(matchLabels).length ? { matchLabels } : {}),
    ...(matchExpressions.length ? { matchExpressions } : {}),
  };
}
