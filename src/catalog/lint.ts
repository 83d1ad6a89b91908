import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { bundlePath, loadBundleSpec, PLACEHOLDER_RE } from '../builder/spec.js';
import { errorMessage } from '../errors.js';
import { discoverBundles } from './discover.js';
import { SourceFolder } from '../layer/source-folder.js';
import { insideHierarchies, KAIROS_SYSEXT_HIERARCHIES, uncoveredInTree } from '../sysext/hierarchies.js';

export interface LintProblem {
  bundle: string;
  file: string;
  message: string;
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

const FLOATING = /^(latest|stable|main|master|edge|\*|x)$|[*^~]|\.x$/i;

/**
 * Catalog rules on top of spec validation: versions are pinned (no `latest`, ranges or
 * wildcards in bundle, chart or default versions), sysext bundles only ship into the directories
 * a stock Kairos node merges, every bundle has a README, and the README documents every
 * cloud-config value the bundle reads.
 */
export async function lintCatalog(catalogDir: string): Promise<LintProblem[]> {
  const problems: LintProblem[] = [];
  for (const b of await discoverBundles(catalogDir)) {
    const specFile = join(catalogDir, b.name, 'bundle.yaml');
    const add = (file: string, message: string) => problems.push({ bundle: b.name, file, message });
    let loaded;
    try {
      loaded = await loadBundleSpec(b.dir);
    } catch (e) {
      add(specFile, errorMessage(e));
      continue;
    }
    const { spec } = loaded;
    if (spec.name !== b.name) add(specFile, `name "${spec.name}" differs from its folder "${b.name}"`);
    if (FLOATING.test(spec.version)) add(specFile, `version "${spec.version}" is not pinned`);
    for (const [i, c] of spec.charts.entries()) {
      const v = c.version.replace(PLACEHOLDER_RE, (_, k: string) => spec.config.values[k] ?? '');
      if (!v || FLOATING.test(v)) add(specFile, `charts.${i}.version resolves to "${v}", which is not pinned`);
    }
    for (const [k, v] of Object.entries(spec.config.values)) {
      if (/version$/.test(k) && FLOATING.test(v)) add(specFile, `config.values.${k} default "${v}" is not pinned`);
      // Values are substituted as text into YAML: a pattern is what keeps a node's config from injecting structure.
      if (!spec.config.patterns[k]) add(specFile, `config.values.${k} has no config.patterns.${k} to check node-supplied values`);
    }
    if (spec.type === 'sysext') {
      // Catalog extensions must work on a stock Kairos node, which merges only its hierarchies.
      const entries = [
        ...spec.files.map((f, i) => [`files.${i}`, f] as const),
        ...Object.entries(spec.platform_files).flatMap(([p, fs]) => fs.map((f, i) => [`platform_files.${p}.${i}`, f] as const)),
      ];
      for (const [field, f] of entries) {
        const src = f.src ? bundlePath(b.dir, f.src, specFile, `${field}.src`) : undefined;
        const outside =
          src && (await isDirectory(src))
            ? await uncoveredInTree(src, KAIROS_SYSEXT_HIERARCHIES, f.dst)
            : insideHierarchies(f.dst.replace(/^\.?\/+|\/+$/g, ''), KAIROS_SYSEXT_HIERARCHIES)
              ? []
              : [f.dst];
        if (outside.length)
          add(
            specFile,
            `${field}: ${outside.map((o) => `/${o.replace(/^\/+/, '')}`).join(', ')} would not be merged on a stock Kairos node (SYSTEMD_SYSEXT_HIERARCHIES=${KAIROS_SYSEXT_HIERARCHIES.join(':')})`,
          );
      }
    }
    const readmeFile = join(catalogDir, b.name, 'README.md');
    let readme: string;
    try {
      // Read as a source: a FIFO or a symlink out of the folder is a problem, never a hang or a leak.
      const text = new SourceFolder(b.dir).readOptional('README.md', readmeFile);
      if (text === undefined) {
        add(readmeFile, 'missing: every bundle documents its purpose and cloud-config block');
        continue;
      }
      readme = text.toString('utf8');
    } catch (e) {
      add(readmeFile, errorMessage(e));
      continue;
    }
    for (const k of Object.keys(spec.config.values)) {
      if (!new RegExp(`\\b${k}\\b`).test(readme)) add(readmeFile, `does not document config value "${spec.config.key}.${k}"`);
    }
    if (Object.keys(spec.config.values).length && !readme.includes(`${spec.config.key}:`)) {
      add(readmeFile, `has no cloud-config example with the "${spec.config.key}:" block`);
    }
  }
  return problems;
}
