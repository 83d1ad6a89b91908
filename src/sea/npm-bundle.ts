/**
 * The second half of `npm run bundle`: the whole CLI as one CommonJS script, dist/cli/kbundle.cjs
 * (src/sea/cli-bundle.ts, syntax for the oldest Node in package.json's engines), and its V8 code
 * cache for the Node running the build, written by `kbundle --write-code-cache` in a fresh process
 * (a cache is only accepted by a process started with the same V8 flags).
 * src/sea/npm-launch.cts starts the CLI from them.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { bundleCliScript } from './cli-bundle.js';
import { codeCachePath } from './code-cache.cjs';
import { NPM_CLI_SCRIPT } from './npm-launch.cjs';

/** The major of package.json's `engines.node` (">=20.18.1" → 20): the oldest Node the script must run on. */
function oldestNodeMajor(): number {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { engines?: { node?: string } };
  const major = /(\d+)/.exec(pkg.engines?.node ?? '')?.[1];
  if (!major) throw new Error(`package.json: engines.node "${pkg.engines?.node ?? ''}" names no Node version`);
  return Number(major);
}

async function main(): Promise<void> {
  rmSync(codeCachePath(NPM_CLI_SCRIPT), { force: true }); // never a cache of an older script beside the new one
  await bundleCliScript(NPM_CLI_SCRIPT, oldestNodeMajor());
  const cli = fileURLToPath(new URL('../cli/kbundle.cjs', import.meta.url));
  try {
    execFileSync(process.execPath, [cli, '--write-code-cache'], { stdio: ['ignore', 'ignore', 'inherit'] });
  } catch {
    // kbundle works without it (the ES modules run instead), only slower to start: not a failed build.
    process.stderr.write('npm run bundle: warning: no V8 code cache was written (above); kbundle starts about 50 ms slower without it\n');
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`npm run bundle: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
