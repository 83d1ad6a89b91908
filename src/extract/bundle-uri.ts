import { UserError } from '../errors.js';

export type BundleScheme = 'run' | 'container' | 'docker';

export interface BundleTarget {
  scheme: BundleScheme;
  /** The reference without the scheme (what Kairos exports as BUNDLE_TARGET). */
  ref: string;
  raw: string;
}

/**
 * Bundle targets exactly as Kairos takes them in `bundles: - targets:` (kairos-sdk bundles.go):
 * only the `scheme://` form works; `package://` (luet) is not kbundle's.
 */
export function parseBundleTarget(raw: string, what = 'bundle target'): BundleTarget {
  const m = /^([a-z]+):\/\/(.+)$/.exec(raw.trim());
  if (!m) {
    const short = /^(run|container|docker):([^/].*)$/.exec(raw.trim());
    if (short) throw new UserError(`${what}: "${raw}" must be written ${short[1]}://${short[2]}`, 'Kairos only accepts the scheme:// form');
    throw new UserError(`${what}: "${raw}" has no scheme`, 'write run://<image>, container://<image> or docker://<image>');
  }
  const scheme = m[1]!;
  if (scheme === 'package') throw new UserError(`${what}: "${raw}": package:// bundles are luet packages, which kbundle does not install`);
  if (scheme !== 'run' && scheme !== 'container' && scheme !== 'docker') {
    throw new UserError(`${what}: "${raw}": unknown scheme ${scheme}://`, 'use run://, container:// or docker://');
  }
  return { scheme, ref: m[2]!, raw };
}
