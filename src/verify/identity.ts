/**
 * Certificate identity matching. @sigstore/verify's own SAN check is `signer.match(policy)` — an
 * unanchored regular expression built from the policy string — so `builder@example.com` would
 * accept `evil-builder@exampleXcom.attacker.test`. kbundle never hands it a policy: identities are
 * compared here, exactly, or with a fully anchored expression when the user asked for one.
 */
import { UserError } from '../errors.js';

export type Matcher = { exact: string } | { regexp: string; re: RegExp };

export function exactMatcher(value: string, what: string): Matcher {
  if (!value) throw new UserError(`${what}: must not be empty`);
  return { exact: value };
}

export function regexpMatcher(pattern: string, what: string): Matcher {
  if (!pattern) throw new UserError(`${what}: must not be empty`);
  if (pattern.length > 1024) throw new UserError(`${what}: longer than 1024 characters`);
  let re: RegExp;
  try {
    re = new RegExp(`^(?:${pattern})$`, 'u');
  } catch (e) {
    throw new UserError(`${what}: "${pattern}" is not a valid regular expression (${(e as Error).message})`);
  }
  return { regexp: pattern, re };
}

export function matches(m: Matcher, value: string | undefined): boolean {
  if (value === undefined) return false;
  return 'exact' in m ? value === m.exact : m.re.test(value);
}

export function describeMatcher(m: Matcher): string {
  return 'exact' in m ? `"${m.exact}"` : `/^(?:${m.regexp})$/`;
}
