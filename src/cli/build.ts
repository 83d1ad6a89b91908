import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { buildTo } from '../builder/output.js';
import { sourceDateEpochFromEnv } from '../builder/epoch.js';
import { loadBundleSpec } from '../builder/spec.js';
import { UserError } from '../errors.js';
import { GZIP_DEFAULT_LEVEL, parseCompression } from '../layer/codec.js';
import { zstdThreads } from '../layer/zstd.js';
import { isRegistryLocation, parseImageArgument, type ImageLocation } from '../store/transport.js';
import type { SbomRequest } from '../builder/output.js';
import type { CliIo } from './io.js';
import { makePrinter } from './output.js';

function parseOwner(v: string): { uid: number; gid: number } {
  const m = /^(\d+):(\d+)$/.exec(v);
  if (!m) throw new UserError(`--owner: "${v}" must be uid:gid, e.g. 0:0`);
  return { uid: Number(m[1]), gid: Number(m[2]) };
}

/** `--sbom <format>`: where the documents go (default: a `sbom` folder beside the output). */
export async function sbomRequest(format: string | undefined, dir: string | undefined, output: ImageLocation): Promise<SbomRequest | undefined> {
  if (format === undefined) {
    if (dir !== undefined) throw new UserError('--sbom-dir needs --sbom spdx|cyclonedx');
    return undefined;
  }
  const { parseSbomFormat } = await import('../sbom/index.js');
  const f = parseSbomFormat(format);
  if (dir !== undefined) return { format: f, dir };
  const at = isRegistryLocation(output) ? '.' : output.path;
  return { format: f, dir: join(dirname(resolve(at)), 'sbom') };
}

export function registerBuild(program: Command, io: CliIo): void {
  program
    .command('build')
    .description('build a bundle folder (bundle.yaml, or a community-bundles Dockerfile) into a reproducible OCI image')
    .argument('<bundle-dir>', 'folder holding bundle.yaml (or a Dockerfile: FROM scratch + COPY)')
    .option('-o, --output <location>', 'oci:<dir>[:tag] | oci-archive:<file.tar>[:tag] | docker-archive:<file.tar>[:name:tag]', 'oci:out/oci')
    .option('--platform <os/arch...>', 'build only these platforms (default: all in bundle.yaml)')
    .option('--owner <uid:gid>', 'owner of every file in the layer', '0:0')
    .option('--revision <rev>', 'source revision to record (org.opencontainers.image.revision)')
    .option(
      '--compression <c[:level]>',
      'layer compression: gzip (default, level 6; what every Kairos release reads) or zstd (default level 3; multi-threaded, needs the zstd program), e.g. zstd:9',
      'gzip',
    )
    .option('--gzip-level <n>', 'gzip compression level 1-9 (same as --compression gzip:<n>)')
    .option('--zstd-level <n>', 'zstd compression level 1-19 (same as --compression zstd:<n>)')
    .option('--sysext-key <pem>', 'sysext/confext bundles: sign the verity root hash with this private key')
    .option('--sysext-cert <pem>', 'sysext/confext bundles: the certificate for --sysext-key')
    .option('--sbom <format>', 'also write an SBOM of each platform image: spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX 1.6 JSON)')
    .option('--sbom-dir <dir>', 'where --sbom writes (default: a sbom folder beside the output)')
    .option('--trusted-root <file>', 'trusted_root.json for keyless signature: pins of url downloads (default $KBUNDLE_TRUSTED_ROOT)')
    .option('--json', 'print a JSON summary')
    .action(
      async (
        dir: string,
        o: {
          output: string;
          platform?: string[];
          owner: string;
          revision?: string;
          gzipLevel?: string;
          compression: string;
          zstdLevel?: string;
          sysextKey?: string;
          sysextCert?: string;
          sbom?: string;
          sbomDir?: string;
          trustedRoot?: string;
          json?: boolean;
        },
      ) => {
        const out = makePrinter(!!o.json, io);
        const location = parseImageArgument(o.output, '-o', { bare: false });
        const sbom = await sbomRequest(o.sbom, o.sbomDir, location);
        const compression = parseCompression(o.compression, { gzip: o.gzipLevel, zstd: o.zstdLevel });
        // The other codec's level flag is checked too, though unused: a typo there should not pass.
        if (compression.codec === 'zstd' && o.gzipLevel !== undefined) parseCompression('gzip', { gzip: o.gzipLevel });
        if (compression.codec === 'gzip' && o.zstdLevel !== undefined) parseCompression('zstd', { zstd: o.zstdLevel });
        if (compression.codec === 'zstd') zstdThreads(io.env); // a bad KBUNDLE_ZSTD_THREADS fails before any output
        const level = compression.codec === 'gzip' ? compression.level : GZIP_DEFAULT_LEVEL;
        const owner = parseOwner(o.owner);
        if (!existsSync(join(dir, 'bundle.yaml')) && existsSync(join(dir, 'Dockerfile'))) {
          // A kairos-io/community-bundles folder as it is: the image docker build would make.
          if (compression.codec !== 'gzip' || o.owner !== '0:0' || o.sysextKey || o.sysextCert)
            throw new UserError(`${join(dir, 'Dockerfile')}: --compression, --owner and --sysext-* apply to bundle.yaml builds`, 'run kbundle import to get a bundle.yaml, or drop those options');
          const { buildDockerfileTo } = await import('../dockerfile/build.js');
          const r = await buildDockerfileTo(dir, location, { platforms: o.platform, gzipLevel: level, sourceDateEpoch: sourceDateEpochFromEnv(io.env), sbom });
          const lines = [`built ${r.name} from ${join(dir, 'Dockerfile')} (${r.layers.length} layer(s), one per COPY) → ${r.location}`, `digest: ${r.root.digest}`];
          for (const l of r.layers) lines.push(`  ${l.digest} ${l.createdBy}`);
          for (const s of r.sboms ?? []) lines.push(`  sbom ${s.platform}: ${s.path}`);
          out.result(lines.join('\n'), {
            name: r.name,
            dockerfile: true,
            location: r.location,
            tag: r.tag,
            digest: r.root.digest,
            mediaType: r.root.mediaType,
            layers: r.layers.map((l) => ({ digest: l.digest, diffId: l.diffId, size: l.size, createdBy: l.createdBy })),
            platforms: r.images.map((i) => ({ platform: i.platform, digest: i.manifest.digest })),
            ...(r.sboms ? { sboms: r.sboms } : {}),
          });
          return;
        }
        const bars = new Map<string, ReturnType<typeof out.progress>>();
        const result = await buildTo(dir, location, {
          platforms: o.platform,
          uid: owner.uid,
          gid: owner.gid,
          revision: o.revision,
          gzipLevel: level,
          compression: compression.codec,
          zstdLevel: compression.codec === 'zstd' ? compression.level : undefined,
          sysextKey: o.sysextKey,
          sysextCert: o.sysextCert,
          sourceDateEpoch: sourceDateEpochFromEnv(io.env),
          sbom,
          trustedRoot: o.trustedRoot ?? io.env.KBUNDLE_TRUSTED_ROOT,
          onWarning: (m) => out.warn(m),
          onProgress: (e) => {
            if (e.kind === 'layer-start') bars.set(e.platform, out.progress(e.bytes, e.platform));
            else if (e.kind === 'layer-bytes') bars.get(e.platform)?.add(e.bytes);
            else bars.get(e.platform)?.stop();
          },
        });
        const { spec } = result.loaded;
        const lines = [`built ${spec.name} ${spec.version} (${spec.type}) → ${result.location}`, `digest: ${result.root.digest}`];
        for (const i of result.images) lines.push(`  ${i.platform}: ${i.manifest.digest} (layer ${(i.layer.size / 1048576).toFixed(1)} MiB)`);
        for (const s of result.sboms ?? []) lines.push(`  sbom ${s.platform}: ${s.path}`);
        out.result(lines.join('\n'), {
          name: spec.name,
          version: spec.version,
          type: spec.type,
          location: result.location,
          tag: result.tag,
          digest: result.root.digest,
          mediaType: result.root.mediaType,
          platforms: result.images.map((i) => ({ platform: i.platform, digest: i.manifest.digest, layer: i.layer.digest, diffId: i.layer.diffId, size: i.layer.size })),
          ...(result.sboms ? { sboms: result.sboms } : {}),
        });
      },
    );

  program
    .command('validate')
    .description('check a bundle.yaml and the files it names, without building')
    .argument('<bundle-dir>', 'folder holding bundle.yaml')
    .option('--json', 'print a JSON summary')
    .action(async (dir: string, o: { json?: boolean }) => {
      const loaded = await loadBundleSpec(dir);
      const { spec, specPath } = loaded;
      // Walk every source as a build would (folders included), without fetching downloads.
      const { planEntries } = await import('../builder/entries.js');
      for (const p of spec.platforms) await planEntries(loaded, p, { downloads: false });
      makePrinter(!!o.json, io).result(`${specPath}: ok (${spec.name} ${spec.version}, ${spec.type}, ${spec.platforms.join(', ')})`, {
        ok: true,
        name: spec.name,
        version: spec.version,
        type: spec.type,
        platforms: spec.platforms,
      });
    });
}
