import { existsSync } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import { writeFileAtomic } from '../util/atomic-write.js';
import { join, posix, resolve } from 'node:path';
import { stringify } from 'yaml';
import { UserError } from '../errors.js';
import { loadBundleSpec, type LoadedSpec } from '../builder/spec.js';
import { bundleNameOf, DEFAULT_PLATFORMS } from './build.js';
import { translateDockerfile } from './translate.js';

/**
 * `kbundle import <folder>`: write the bundle.yaml that builds the same file tree as the
 * folder's Dockerfile (its COPY steps become `run:` and `files:` entries). The result is a
 * regular kbundle bundle: one layer per platform, modes normalised to 0644/0755 by the
 * executable bit (unless --chmod gave one), downloads to be added as `url:` entries.
 */

export interface ImportOptions {
  version?: string;
  name?: string;
  /** Replace an existing bundle.yaml. */
  force?: boolean;
}

export interface ImportResult {
  specPath: string;
  text: string;
  loaded: LoadedSpec;
}

interface FileEntry {
  src: string;
  dst: string;
  mode?: string;
}

export async function importDockerfileFolder(dirArg: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const dir = resolve(dirArg);
  const specPath = join(dirArg, 'bundle.yaml');
  if (existsSync(join(dir, 'bundle.yaml')) && !opts.force) throw new UserError(`${specPath} already exists`, 'pass --force to replace it');
  const t = await translateDockerfile(dirArg);
  const files: FileEntry[] = [];
  const written = new Map<string, number>();
  /** Folders the image has so far (destinations of folder copies and every parent). */
  const dirs = new Set<string>();
  let run: string | undefined;
  for (const step of t.steps) {
    if (step.uid !== 0 || step.gid !== 0) {
      throw new UserError(
        `${t.dockerfile.path}:${step.line}: ${step.text}: --chown has no bundle.yaml equivalent`,
        'every file of a kbundle image has one owner (kbundle build --owner uid:gid); remove --chown',
      );
    }
    const destRel = step.dest.replace(/^\/+/, '');
    for (const src of step.sources) {
      const rel = posix.normalize(src.given.replace(/^\/+/, '') || '.');
      const isDir = (await stat(src.path)).isDirectory();
      // A folder copied onto the image root has no single destination in bundle.yaml: one entry per child.
      const targets: { src: string; dst: string; dir: boolean }[] = [];
      if (isDir && !destRel) {
        for (const n of (await readdir(src.path)).sort()) targets.push({ src: posix.join(rel, n), dst: n, dir: (await stat(join(src.path, n))).isDirectory() });
      } else if (isDir) {
        targets.push({ src: rel, dst: destRel, dir: true });
      } else {
        // As Docker: into the destination when it names a folder or an earlier COPY made one there.
        const intoDir = step.destIsDir || !destRel || dirs.has(destRel);
        targets.push({ src: rel, dst: intoDir ? posix.join(destRel, posix.basename(rel)) : destRel, dir: false });
      }
      for (const tg of targets) {
        const prev = written.get(tg.dst);
        if (prev !== undefined) {
          throw new UserError(`${t.dockerfile.path}:${step.line}: ${step.text}: /${tg.dst} is also written by line ${prev}`, 'bundle.yaml writes each destination once: drop one of the two COPYs');
        }
        written.set(tg.dst, step.line);
        const parts = tg.dst.split('/');
        for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
        if (tg.dir) dirs.add(tg.dst);
        if (tg.dst === 'run.sh' && !tg.dir && step.chmod === undefined) run = tg.src;
        else files.push({ src: tg.src, dst: tg.dst, ...(step.chmod !== undefined ? { mode: step.chmod.toString(8).padStart(4, '0') } : {}) });
      }
    }
  }
  const name = opts.name ?? bundleNameOf(dir);
  let description = `${name} (imported from a community-bundles Dockerfile)`;
  try {
    const heading = /^#\s+(.+)$/m.exec(t.folder.readOptional('README.md', join(dirArg, 'README.md'))?.toString('utf8') ?? '');
    if (heading) description = heading[1]!.trim();
  } catch {
    /* no README */
  }
  const spec: Record<string, unknown> = {
    name,
    version: opts.version ?? '0.0.0',
    description,
    type: run ? 'run' : 'container',
    platforms: DEFAULT_PLATFORMS,
    ...(run ? { run } : {}),
    ...(files.length ? { files } : {}),
  };
  const header = [
    `# Written by \`kbundle import\` from ${join(dirArg, 'Dockerfile')}: the same files as its ${t.steps.length} COPY step(s).`,
    '# Set version; add downloads as url: + sha256: (+ extract:) entries; see bundles/README.md.',
    '',
  ].join('\n');
  const text = header + stringify(spec, { lineWidth: 0 });
  await writeFileAtomic(join(dir, 'bundle.yaml'), text);
  try {
    return { specPath, text, loaded: await loadBundleSpec(dirArg) };
  } catch (e) {
    // Nothing half-written: a bundle.yaml that does not validate is removed again.
    await rm(join(dir, 'bundle.yaml'), { force: true });
    throw e;
  }
}
