/**
 * `npm run sea`: the node executables. One CommonJS script holding the whole CLI (esbuild), turned
 * into a single-executable-application blob by the pinned Node release itself, injected with
 * postject into that release's `node` for each architecture. No code cache and no snapshot: both
 * make the blob differ from build to build (measured; see src/sea/README.md), and the executables
 * must be byte-reproducible.
 *
 * The blob's main script is src/sea/loader.ts, a few lines; the CLI itself is a SEA asset it
 * compiles only when a command needs it (`--version` does not), with the V8 code cache that
 * `kbundle --write-code-cache` writes next to the executable on the node (src/sea/code-cache.cts).
 *
 * Usage: node dist/src/sea/build.js [--out dist/sea] [--platform linux/amd64 ...]
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { commitFile, writeFileAtomic } from '../util/atomic-write.js';
import { bundle, bundleCliScript } from './cli-bundle.js';
import { NODE_RELEASE, executableName, type SeaPlatform } from './release.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
/** The sentinel Node's SEA support looks for (documented in Node's single-executable-applications page). */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const CACHE = join(ROOT, 'node_modules/.cache/kbundle-sea');
const NODE_MAJOR = Number(NODE_RELEASE.version.split('.')[0]);

function sha256File(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (c) => h.update(c))
      .on('error', rej)
      .on('end', () => res(h.digest('hex')));
  });
}

/**
 * The `node` binary of the pinned release for one platform: `npm pack` downloads the registry
 * package (through npm's cache), its integrity is compared with the pinned one, then bin/node is
 * unpacked. Never the machine's own node, never a URL of our own.
 */
async function nodeBinary(platform: SeaPlatform): Promise<string> {
  const pkg = NODE_RELEASE.packages[platform];
  const dir = join(CACHE, `${pkg.name}-${NODE_RELEASE.version}`);
  const bin = join(dir, 'package/bin/node');
  const stamp = join(dir, 'integrity');
  try {
    if (readFileSync(stamp, 'utf8') === pkg.integrity) return bin;
  } catch {
    /* not cached yet */
  }
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const out = execFileSync('npm', ['pack', `${pkg.name}@${NODE_RELEASE.version}`, '--pack-destination', dir, '--json', '--silent'], { encoding: 'utf8' });
  const [packed] = JSON.parse(out) as { filename: string; integrity: string }[];
  if (!packed || packed.integrity !== pkg.integrity) {
    throw new Error(`${pkg.name}@${NODE_RELEASE.version}: integrity ${packed?.integrity} is not the pinned ${pkg.integrity} (src/sea/node-release.json)`);
  }
  execFileSync('tar', ['-xzf', join(dir, packed.filename), '-C', dir, 'package/bin/node']);
  await rm(join(dir, packed.filename));
  await writeFile(stamp, pkg.integrity);
  return bin;
}

/** The CLI (SEA asset `cli.cjs`) and the small main script that loads it (src/sea/loader.ts). */
async function bundleCli(work: string): Promise<{ cli: string; loader: string }> {
  const cli = await bundleCliScript(join(work, 'cli.cjs'), NODE_MAJOR);
  // The loader accepts a code cache only if it was made from this very CLI script (code-cache.cts).
  const cliSha256 = await sha256File(cli);
  const loader = await bundle(join(ROOT, 'dist/src/sea/loader.js'), join(work, 'loader.cjs'), { define: { KBUNDLE_CLI_SHA256: JSON.stringify(cliSha256) }, nodeMajor: NODE_MAJOR });
  return { cli, loader };
}

async function main(argv: string[]): Promise<void> {
  const outDir = resolve(ROOT, argv.includes('--out') ? argv[argv.indexOf('--out') + 1]! : 'dist/sea');
  const wanted = argv.flatMap((a, i) => (argv[i - 1] === '--platform' ? [a as SeaPlatform] : []));
  const platforms = wanted.length ? wanted : (Object.keys(NODE_RELEASE.packages) as SeaPlatform[]);
  for (const p of platforms) if (!NODE_RELEASE.packages[p]) throw new Error(`--platform ${p}: not one of ${Object.keys(NODE_RELEASE.packages).join(', ')}`);

  const work = join(outDir, '.work');
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const scripts = await bundleCli(work);

  // The blob is made by the pinned release itself (the format belongs to that Node version). It
  // holds no machine code, so the amd64 node writes it for arm64 too.
  const hostNode = await nodeBinary('linux/amd64');
  const blob = join(work, 'kbundle.blob');
  const config = join(work, 'sea-config.json');
  // Paths relative to the work folder: the blob records the main script's path as written, and
  // an absolute one would make the executable depend on where it was built.
  await writeFile(
    config,
    JSON.stringify({
      main: basename(scripts.loader),
      output: basename(blob),
      assets: { 'cli.cjs': basename(scripts.cli) },
      disableExperimentalSEAWarning: true,
      useCodeCache: false,
      useSnapshot: false,
    }),
  );
  execFileSync(hostNode, ['--experimental-sea-config', basename(config)], { cwd: work, stdio: 'pipe' });

  const postject = join(dirname(createRequire(import.meta.url).resolve('postject/package.json')), 'dist/cli.js');
  for (const platform of platforms) {
    const target = join(outDir, executableName(platform));
    const staged = join(work, executableName(platform));
    await copyFile(await nodeBinary(platform), staged);
    await chmod(staged, 0o755);
    // postject (LIEF) prints harmless section-name warnings; its output is shown only when it fails.
    execFileSync(process.execPath, [postject, staged, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE], { stdio: 'pipe' });
    await commitFile(staged, target);
  }
  await rm(work, { recursive: true, force: true });
  // The catalog bundle bundles/kbundle ships these files; its assets/ folder is not in git.
  if (outDir === resolve(ROOT, 'dist/sea')) {
    const assets = join(ROOT, 'bundles/kbundle/assets');
    await mkdir(assets, { recursive: true });
    for (const platform of platforms) await copyFile(join(outDir, executableName(platform)), join(assets, executableName(platform)));
  }

  // SHA256SUMS covers every executable in the folder, as `sha256sum -c` reads it.
  const names = (await readdir(outDir)).filter((n) => n.startsWith('kbundle-linux-')).sort();
  const lines = await Promise.all(names.map(async (n) => `${await sha256File(join(outDir, n))}  ${n}\n`));
  await writeFileAtomic(join(outDir, 'SHA256SUMS'), lines.join(''));
  process.stdout.write(lines.join(''));
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`npm run sea: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
