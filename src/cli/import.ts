import type { Command } from 'commander';
import { importDockerfileFolder } from '../dockerfile/import.js';
import type { CliIo } from './io.js';
import { makePrinter } from './output.js';

export function registerImport(program: Command, io: CliIo): void {
  program
    .command('import')
    .description('write a bundle.yaml for a kairos-io/community-bundles style folder (Dockerfile: FROM scratch + COPY, run.sh, assets/)')
    .argument('<dir>', 'folder holding the Dockerfile')
    .option('--bundle-version <version>', 'the bundle version to record (bundle.yaml version:)', '0.0.0')
    .option('--name <name>', 'the bundle name (default: the folder name)')
    .option('--force', 'replace an existing bundle.yaml')
    .option('--json', 'print a JSON summary')
    .action(async (dir: string, o: { bundleVersion: string; name?: string; force?: boolean; json?: boolean }) => {
      const r = await importDockerfileFolder(dir, { version: o.bundleVersion, name: o.name, force: o.force });
      const { spec } = r.loaded;
      makePrinter(!!o.json, io).result(
        `wrote ${r.specPath} (${spec.name} ${spec.version}, ${spec.type}, ${spec.files.length} file entr${spec.files.length === 1 ? 'y' : 'ies'}${spec.run ? `, run: ${spec.run}` : ''})`,
        {
          specPath: r.specPath,
          name: spec.name,
          version: spec.version,
          type: spec.type,
          run: spec.run,
          files: spec.files.map((f) => ({ src: f.src, dst: f.dst, mode: f.mode })),
        },
      );
    });
}
