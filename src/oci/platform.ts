import { UserError } from '../errors.js';
import type { Descriptor, Platform } from './types.js';

const NODE_ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

export const KNOWN_PLATFORMS = ['linux/amd64', 'linux/arm64', 'linux/arm/v7', 'linux/arm/v6', 'linux/386', 'linux/ppc64le', 'linux/s390x', 'linux/riscv64'] as const;

/** `os/arch[/variant]` as Docker and skopeo spell it. `linux/arm64/v8` is normalised to `linux/arm64`. */
export function parsePlatform(s: string, where = 'platform'): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) {
    throw new UserError(`${where}: "${s}" is not a platform (expected os/arch[/variant], e.g. linux/amd64)`);
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  const p: Platform = { os, architecture };
  if (variant && !(architecture === 'arm64' && variant === 'v8')) p.variant = variant;
  return p;
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

export function isKnownPlatform(s: string): boolean {
  return (KNOWN_PLATFORMS as readonly string[]).includes(s);
}

export function hostPlatform(): Platform {
  const architecture = NODE_ARCH[process.arch] ?? process.arch;
  const p: Platform = { os: 'linux', architecture };
  if (architecture === 'arm') p.variant = `v${(process.config.variables as { arm_version?: string }).arm_version ?? '7'}`;
  return p;
}

export function platformMatches(want: Platform, have: Platform | undefined): boolean {
  if (!have) return false;
  if (want.os !== have.os || want.architecture !== have.architecture) return false;
  if (want.variant && have.variant && want.variant !== have.variant) return false;
  if (want.variant && !have.variant && want.architecture !== 'arm64') return false;
  return true;
}

/**
 * Pick the manifest for a platform from an index's entries (attestation entries are skipped).
 * `hint`: how the caller's user picks another platform.
 */
export function selectPlatform(entries: Descriptor[], want: Platform, what: string, hint = 'pass --platform with one of the available platforms'): Descriptor {
  const candidates = entries.filter((d) => platformMatches(want, d.platform));
  if (candidates.length === 0) {
    const have = entries.map((d) => (d.platform ? formatPlatform(d.platform) : '?')).join(', ');
    throw new UserError(`${what}: no image for platform ${formatPlatform(want)} (available: ${have || 'none'})`, hint);
  }
  return candidates[0]!;
}
