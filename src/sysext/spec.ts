import { z } from 'zod';
import { UserError } from '../errors.js';
import { validateExtensionName } from './release.js';
import { KINDS, type ExtensionKind } from '../kairos/extensions.js';

/**
 * The `sysext:` section of a `type: sysext|confext` bundle.yaml and its semantic checks. A leaf
 * module (zod and sysext helpers only), so src/builder/spec.ts can import it without a cycle.
 */
const RELEASE_ID_RE = /^[a-z0-9._-]+$/;

/** The `sysext:` section of a bundle.yaml (also used for confext bundles). */
export const SysextSettingsSchema = z
  .object({
    /** Extension name (file `<name>.sysext.raw`); default: the bundle name. */
    name: z.string().optional(),
    id: z
      .string()
      .regex(/^(_any|[a-z0-9._-]+)$/, 'must be _any or an os-release ID (lowercase letters, digits, ".", "_", "-")')
      .default('_any'),
    version_id: z
      .string()
      .regex(/^[A-Za-z0-9._~+-]+$/, 'must be an os-release VERSION_ID')
      .optional(),
    /** SYSEXT_LEVEL (confext: CONFEXT_LEVEL). */
    level: z.string().regex(RELEASE_ID_RE, 'must be lowercase letters, digits, ".", "_", "-"').optional(),
    /** `auto` writes the platform's architecture (as AuroraBoot does); `_any` leaves it open. */
    architecture: z.enum(['auto', '_any']).default('auto'),
    reload_manager: z.boolean().default(false),
    scope: z.array(z.enum(['initrd', 'system', 'portable'])).optional(),
    format: z.enum(['ddi', 'plain']).default('ddi'),
    /** `auto`: erofs where the build host's systemd is ≥ 255 (what its --make-ddi writes), else squashfs. */
    fs: z.enum(['auto', 'squashfs', 'erofs']).default('auto'),
  })
  .strict();
export type SysextSettings = z.infer<typeof SysextSettingsSchema>;

/**
 * Semantic checks for a sysext/confext bundle.yaml, for spec.ts's validateSemantics: the `sysext:`
 * section only on those types, a valid extension name, and every destination under the
 * hierarchies systemd merges (usr/, opt/; confext: etc/).
 */
export function checkSysextBundleSpec(spec: { name: string; type: string; files: { dst: string }[]; platform_files: Record<string, { dst: string }[]>; sysext?: unknown }, specPath: string): void {
  const isExt = spec.type === 'sysext' || spec.type === 'confext';
  if (!isExt) {
    if (spec.sysext !== undefined) throw new UserError(`${specPath}: sysext: only sysext and confext bundles take a sysext: section (type is ${spec.type})`);
    return;
  }
  const parsed = SysextSettingsSchema.safeParse(spec.sysext ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UserError(`${specPath}: sysext.${issue.path.join('.')}: ${issue.message}`);
  }
  validateExtensionName(parsed.data.name ?? spec.name, `${specPath}: sysext.name`);
  const hier = KINDS[spec.type as ExtensionKind].hierarchies;
  const all = [
    ...spec.files.map((f, i) => [`files.${i}.dst`, f.dst] as const),
    ...Object.entries(spec.platform_files).flatMap(([p, fs]) => fs.map((f, i) => [`platform_files.${p}.${i}.dst`, f.dst] as const)),
  ];
  for (const [field, dst] of all) {
    const top = dst.replace(/^\.?\/+/, '').split('/')[0]!;
    if (!hier.includes(top))
      throw new UserError(`${specPath}: ${field}: "${dst}" is outside ${hier.map((h) => `${h}/`).join(' and ')}`, `systemd-${spec.type} only merges ${hier.map((h) => `/${h}`).join(' and ')}`);
  }
}
