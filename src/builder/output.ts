import { UserError } from '../errors.js';
import { openDestination } from '../store/open.js';
import { capabilitiesOf, formatLocation, isRegistryLocation, type ImageLocation } from '../store/transport.js';
import { buildBundle, planBuild, type BuildOptions, type BuildResult } from './builder.js';
import { sourceDateEpochFromEnv } from './epoch.js';
import type { SbomFormat, WrittenSbom } from '../sbom/index.js';

export interface BuildOutput extends BuildResult {
  location: string;
  tag: string;
  /** With `sbom`: one document per platform image. */
  sboms?: WrittenSbom[];
}

export interface SbomRequest {
  format: SbomFormat;
  /** Directory the documents are written to. */
  dir: string;
}

/**
 * Build into any local transport. Archives are built in a temp layout beside the target file
 * and written with a temp name then renamed, so a failed build leaves no partial archive.
 */
export async function buildTo(bundleDir: string, out: ImageLocation, opts: BuildOptions & { sbom?: SbomRequest } = {}): Promise<BuildOutput> {
  if (isRegistryLocation(out)) {
    throw new UserError(`-o ${formatLocation(out)}: build writes local images`, `build to oci:<dir> and then: kbundle push oci:<dir>:<tag> ${out.ref}`);
  }
  const caps = capabilitiesOf(out);
  const plan = await planBuild(bundleDir, opts);
  if (!caps.multiPlatform && plan.plans.length !== 1) {
    throw new UserError(
      `-o ${formatLocation(out)}: a docker archive holds one platform, the bundle has ${plan.plans.length} (${plan.plans.map((p) => p.platform).join(', ')})`,
      'pick one with --platform, e.g. --platform linux/amd64',
    );
  }
  const { spec } = plan.loaded;
  // Layouts and OCI archives are tagged <name>_<version>, docker archives named <name>:<version>.
  const dst = await openDestination(out, { defaultTag: `${spec.name}_${spec.version}`, defaultRepoTag: `${spec.name}:${spec.version}` });
  try {
    const layout = dst.layout!;
    const result = await buildBundle(plan, layout, opts);
    // SBOMs are read from the built image while its layout is still open (archives are packed on close).
    let sboms: WrittenSbom[] | undefined;
    if (opts.sbom) {
      const { writeSboms } = await import('../sbom/index.js');
      const { factsFromSpec } = await import('./sbom-facts.js');
      const epoch = opts.sourceDateEpoch ?? sourceDateEpochFromEnv();
      sboms = await writeSboms(layout, result.images, (p) => factsFromSpec(plan.loaded, p, epoch, opts.revision, opts.onWarning), opts.sbom.format, opts.sbom.dir);
    }
    if (dst.reference) await layout.tag(result.root, dst.reference);
    await dst.close(result.root);
    return { ...result, location: dst.location, tag: dst.tag, ...(sboms ? { sboms } : {}) };
  } catch (e) {
    await dst.close().catch(() => undefined);
    throw e;
  }
}
