import { dirname, resolve } from 'node:path';
import { UserError } from '../errors.js';
import { withStagingDir } from '../util/atomic-write.js';
import { writeDockerArchive, writeOciArchive } from '../store/archive.js';
import { OciLayout } from '../store/oci-layout.js';
import { formatLocation, type ImageLocation } from '../store/transport.js';
import { buildBundle, defaultTag, planBuild, type BuildOptions, type BuildResult } from './builder.js';

export interface BuildOutput extends BuildResult {
  location: string;
  tag: string;
}

/**
 * Build into any local transport. Archives are built in a temp layout beside the target file
 * and written with a temp name then renamed, so a failed build leaves no partial archive.
 */
export async function buildTo(bundleDir: string, out: ImageLocation, opts: BuildOptions = {}): Promise<BuildOutput> {
  if (out.transport === 'docker') {
    throw new UserError(`-o ${formatLocation(out)}: build writes local images`, `build to oci:<dir> and then: kbundle push oci:<dir>:<tag> ${out.ref}`);
  }
  const plan = await planBuild(bundleDir, opts);
  if (out.transport === 'docker-archive' && plan.plans.length !== 1) {
    throw new UserError(
      `-o ${formatLocation(out)}: a docker archive holds one platform, the bundle has ${plan.plans.length} (${plan.plans.map((p) => p.platform).join(', ')})`,
      'pick one with --platform, e.g. --platform linux/amd64',
    );
  }
  if (out.transport === 'oci') {
    const layout = await OciLayout.open(out.path, { create: true });
    const result = await buildBundle(plan, layout, opts);
    const tag = out.ref || defaultTag(result);
    await layout.tag(result.root, tag);
    return { ...result, location: formatLocation({ ...out, ref: tag }), tag };
  }
  return withStagingDir(dirname(resolve(out.path)), 'build', async (tmpDir) => {
    const layout = await OciLayout.open(tmpDir, { create: true });
    const result = await buildBundle(plan, layout, opts);
    if (out.transport === 'oci-archive') {
      const tag = out.ref || defaultTag(result);
      await layout.tag(result.root, tag);
      await writeOciArchive(layout, out.path);
      return { ...result, location: formatLocation({ ...out, ref: tag }), tag };
    }
    const { spec } = result.loaded;
    const tag = out.ref || `${spec.name}:${spec.version}`;
    await writeDockerArchive(layout, result.images[0]!.manifest, out.path, tag);
    return { ...result, location: formatLocation({ ...out, ref: tag }), tag };
  });
}
