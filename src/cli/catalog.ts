import type { Command } from 'commander';
import { sourceDateEpochFromEnv } from '../builder/epoch.js';
import { buildCatalog, readCatalogState } from '../catalog/build.js';
import { catalogIndex, writeCatalogIndex } from '../catalog/index-page.js';
import { lintCatalog } from '../catalog/lint.js';
import { UserError } from '../errors.js';
import { OciLayout } from '../store/oci-layout.js';
import { isLayoutLocation, parseImageArgument } from '../store/transport.js';
import type { CliIo } from './io.js';
import { makePrinter } from './output.js';
import { makeClient, registryOptions, type RegistryFlags } from './registry-flags.js';
import { prepareSigning } from './sign.js';
import { addSigningFlags, type SigningFlags } from './signing-options.js';

interface PublishFlags {
  registry: string;
  layout: string;
  bundle?: string[];
  latest: boolean;
  communityRepo: string;
  sign?: boolean;
  attest?: boolean;
  sbomFormat: string;
  builderId?: string;
  sourceRepo?: string;
  sourceCommit?: string;
}

function layoutDir(output: string): string {
  const loc = parseImageArgument(output, '-o', { bare: false });
  if (!isLayoutLocation(loc) || loc.ref) throw new UserError(`-o ${output}: the catalog is built into an OCI layout directory`, 'write it as oci:<dir>, e.g. -o oci:out/catalog');
  return loc.path;
}

export function registerCatalog(program: Command, io: CliIo): void {
  const catalog = program.command('catalog').description('build, lint, index and publish the bundle catalog (bundles/)');

  catalog
    .command('build')
    .description('build every catalog bundle (or only changed ones) into one OCI layout')
    .option('-C, --catalog <dir>', 'catalog folder', 'bundles')
    .option('-o, --output <location>', 'oci:<dir>', 'oci:out/catalog')
    .option('--changed-since <git-rev>', 'only bundles whose folder changed since this revision')
    .option('--bundle <name...>', 'only these bundles')
    .option('--exclude <name...>', 'leave these bundles out (e.g. ones whose downloads are unreachable)')
    .option('-j, --jobs <n>', 'bundles built at once', '2')
    .option('--sbom <format>', 'also write an SBOM of each platform image: spdx or cyclonedx')
    .option('--sbom-dir <dir>', 'where --sbom writes (default: a sbom folder beside the layout)')
    .option('--trusted-root <file>', 'trusted_root.json for keyless signature: pins of url downloads (default $KBUNDLE_TRUSTED_ROOT)')
    .option('--json', 'print a JSON summary')
    .action(
      async (o: {
        catalog: string;
        output: string;
        changedSince?: string;
        bundle?: string[];
        exclude?: string[];
        jobs: string;
        sbom?: string;
        sbomDir?: string;
        trustedRoot?: string;
        json?: boolean;
      }) => {
        const out = makePrinter(!!o.json, io);
        const { sbomRequest } = await import('./build.js');
        const sbom = await sbomRequest(o.sbom, o.sbomDir, parseImageArgument(o.output, '-o', { bare: false }));
        const dir = layoutDir(o.output);
        const r = await buildCatalog(o.catalog, () => OciLayout.open(dir, { create: true }), {
          changedSince: o.changedSince,
          only: o.bundle,
          exclude: o.exclude,
          concurrency: Math.max(1, Number(o.jobs) || 1),
          sourceDateEpoch: sourceDateEpochFromEnv(io.env),
          sbom,
          trustedRoot: o.trustedRoot ?? io.env.KBUNDLE_TRUSTED_ROOT,
          onWarning: (m) => out.warn(m),
          // Progress on a terminal only: the summary below lists every bundle once.
          onBundle: (name, action) => out.tty && out.info(`${action === 'built' ? 'built  ' : 'skipped'} ${name}`),
        });
        const lines = r.entries.map((e) => `${r.built.includes(e) ? 'built  ' : 'cached '} ${e.tag.padEnd(40)} ${e.digest}`);
        lines.push(`${r.built.length} built, ${r.skipped.length} unchanged → ${r.layout.name}`);
        if (r.sboms) lines.push(`${r.sboms.length} SBOM(s) → ${sbom!.dir}`);
        out.result(lines.join('\n'), { layout: r.layout.dir, built: r.built, skipped: r.skipped, ...(r.sboms ? { sboms: r.sboms } : {}) });
      },
    );

  catalog
    .command('lint')
    .description('check every bundle: spec, pinned versions, README documenting each config key')
    .option('-C, --catalog <dir>', 'catalog folder', 'bundles')
    .option('--json', 'print problems as JSON')
    .action(async (o: { catalog: string; json?: boolean }) => {
      const problems = await lintCatalog(o.catalog);
      const out = makePrinter(!!o.json, io);
      out.result(problems.length ? problems.map((p) => `${p.file}: ${p.message}`).join('\n') : `${o.catalog}: catalog ok`, { ok: problems.length === 0, problems });
      if (problems.length) throw new UserError(`${problems.length} problem(s) in ${o.catalog}`);
    });

  catalog
    .command('index')
    .description('write index.json and a static, searchable index.html for the catalog')
    .option('-C, --catalog <dir>', 'catalog folder', 'bundles')
    .option('-o, --out <dir>', 'where to write index.json and index.html', 'out/catalog-site')
    .option('--layout <dir>', 'catalog OCI layout to take digests from (from catalog build)', 'out/catalog')
    .option('--registry <host/namespace>', 'where the bundles are published, for the cloud-config snippets')
    .option('--json', 'print a JSON summary')
    .action(async (o: { catalog: string; out: string; layout: string; registry?: string; json?: boolean }) => {
      let state = {};
      let published;
      try {
        const layout = await OciLayout.open(o.layout);
        state = await readCatalogState(layout);
        published = await (await import('../catalog/publish.js')).readPublishedState(layout);
      } catch {
        /* no build yet: index without digests */
      }
      const entries = await catalogIndex(o.catalog, { registry: o.registry, state, published });
      const files = await writeCatalogIndex(o.out, entries);
      makePrinter(!!o.json, io).result(`wrote ${files.json} and ${files.html} (${entries.length} bundles)`, { ...files, bundles: entries.length });
    });

  const publish = catalog
    .command('publish')
    .description('push every built bundle to <registry>/<namespace>/<name>:<version> and :latest, skipping what is there, and sign what was pushed')
    .requiredOption('--registry <host/namespace>', 'where to publish, e.g. 127.0.0.1:5000/kairos')
    .option('--layout <dir>', 'the catalog OCI layout (from catalog build)', 'out/catalog')
    .option('--bundle <name...>', 'only these bundles')
    .option('--no-latest', 'do not move the :latest tag')
    .option('--community-repo <repo>', 'also tag <namespace>/<repo>:<name>_latest, as kairos-io/community-bundles names them (empty: off)', 'community-bundles')
    .option('--attest', 'attach a signed SBOM of each platform image and a SLSA v1 provenance to every bundle (same key or keyless flags as --sign)')
    .option('--sbom-format <f>', 'with --attest: spdx or cyclonedx', 'spdx')
    .option('--builder-id <uri>', 'with --attest: the provenance builder id (default $KBUNDLE_BUILDER_ID, or the GitHub Actions workflow)')
    .option('--source-repo <url>', 'with --attest: source repository (default: the git origin at build time, or GitHub Actions)')
    .option('--source-commit <sha>', 'with --attest: source commit (default: git HEAD at build time, or $GITHUB_SHA)');
  registryOptions(publish);
  addSigningFlags(publish);
  publish.action(async (o: RegistryFlags & SigningFlags & PublishFlags) => {
    const out = makePrinter(!!o.json, io);
    const { publishCatalog } = await import('../catalog/publish.js');
    // Check every flag and unlock the key before pushing anything: a wrong password must not leave
    // unsigned bundles behind.
    let attest: Omit<import('../catalog/attest.js').CatalogAttestOptions, 'signing' | 'formats'> | undefined;
    if (o.attest) {
      const [{ parseSbomFormat }, { provenanceContext }] = await Promise.all([import('../sbom/index.js'), import('../catalog/provenance.js')]);
      attest = { sbomFormat: parseSbomFormat(o.sbomFormat, '--sbom-format'), context: provenanceContext(o, io.env) };
    } else if (o.builderId || o.sourceRepo || o.sourceCommit) {
      throw new UserError('--builder-id, --source-repo and --source-commit describe the provenance of --attest');
    }
    const prepared = o.sign || o.attest ? await prepareSigning(o, io) : undefined;
    const signer = o.sign ? prepared : undefined;
    const layout = await OciLayout.open(o.layout);
    const client = await makeClient(o, io);
    try {
      const published = await publishCatalog(layout, {
        client,
        registry: o.registry,
        latest: o.latest,
        communityRepo: o.communityRepo || undefined,
        only: o.bundle,
        onBundle: (name, status) => out.info(`${status.padEnd(9)} ${name}`),
        sign: signer
          ? async (target, desc, reference) => {
              const r = await signer.sign(target, desc, { dockerReference: reference.replace(/:[^:/]+$/, '') });
              return r.root.signatures.map((x) => x.location).join(', ');
            }
          : undefined,
        attest: attest && prepared ? { ...attest, signing: prepared.options, formats: prepared.formats } : undefined,
      });
      const attested = (p: (typeof published)[number]) => {
        if (!p.attestations) return '';
        const added = p.attestations.filter((a) => a.added).length;
        return `  attested${added ? ` (+${added})` : ''}`;
      };
      const rows = published.map((p) => `${p.status.padEnd(9)} ${p.name.padEnd(28)} ${p.version.padEnd(10)} ${p.digest}${p.signature ? '  signed' : ''}${attested(p)}`);
      rows.unshift(`${'status'.padEnd(9)} ${'bundle'.padEnd(28)} ${'version'.padEnd(10)} digest`);
      out.result(rows.join('\n'), { registry: o.registry, bundles: published });
    } finally {
      await client.close();
    }
  });
}
