import { sanitizeLabelValue, type Requires } from '../requires/requires.js';
import type { LabelSelector, SelectorRequirement } from './selector.js';

/**
 * The constraints a nodeSelector can express with the labels the operator's labeler sets
 * (kairos.io/flavor, /family, /arch, /software-version-prefix, /trusted-boot), and the ones that
 * only the preflight can check (version ranges, systemd).
 */
export function requiresToSelector(r: Requires): { selector?: LabelSelector; preflightOnly: string[] } {
  const exprs: SelectorRequirement[] = [];
  const inList = (key: string, values: string[] | undefined) => {
    if (values) exprs.push({ key, operator: 'In', values: [...new Set(values.map(sanitizeLabelValue))] });
  };
  inList('kairos.io/flavor', r.flavor);
  inList('kairos.io/family', r.family);
  inList('kairos.io/arch', r.arch);
  inList('kairos.io/software-version-prefix', r.k8s?.distribution);
  // Nodes older than KAIROS_TRUSTED_BOOT have no label: "not true" covers them.
  if (r.trustedBoot !== undefined) exprs.push({ key: 'kairos.io/trusted-boot', operator: r.trustedBoot ? 'In' : 'NotIn', values: ['true'] });
  const preflightOnly = [...(r.kairos ? ['kairos'] : []), ...(r.k8s?.version ? ['k8s.version'] : []), ...(r.systemd !== undefined ? ['systemd'] : [])];
  return { ...(exprs.length ? { selector: { matchExpressions: exprs } } : {}), preflightOnly };
}
