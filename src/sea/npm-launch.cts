/**
 * How the npm CLI (dist/src/cli/kbundle.cjs) starts: like the node executable, it compiles the
 * whole CLI as one CommonJS script (dist/cli/kbundle.cjs) with a V8 code cache beside it
 * (dist/cli/kbundle.cjs.v8cache), instead of loading and compiling the ES modules of
 * dist/cli/main.js on every start (about 60 ms of a short command; bench/README.md). `npm run
 * build` writes both (src/sea/npm-bundle.ts); `kbundle --write-code-cache` writes the cache again,
 * e.g. after Node was upgraded.
 *
 * The cache is trusted as the executable's is (src/sea/code-cache.cts): a regular file owned by
 * the script's owner, writable by nobody else, made for this exact script (its sha256), Node
 * version and architecture. Without a usable cache src/cli/kbundle.cts runs the ES modules: same
 * output.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { compileCli, reportCodeCache, writeWarmCache } from './compile-cli.cjs';
import { codeCachePath, readCodeCache, type CodeCacheBinding, type CodeCacheRead } from './code-cache.cjs';

/** The bundled CLI, next to the ES module bundle (this file is dist/src/sea/npm-launch.cjs). */
export const NPM_CLI_SCRIPT = join(__dirname, '../../cli/kbundle.cjs');

function bindingOf(source: Buffer): CodeCacheBinding {
  return { cliSha256: createHash('sha256').update(source).digest('hex'), nodeVersion: process.version, arch: process.arch };
}

function compile(source: Buffer, cachedData: Buffer | undefined): ReturnType<typeof compileCli> {
  return compileCli(source, NPM_CLI_SCRIPT, createRequire(NPM_CLI_SCRIPT), cachedData);
}

/**
 * Runs the command in `args` (process.argv without node and the script) from the bundled script
 * with its code cache, and exits with its status. Resolves false, having run nothing, when there
 * is no usable cache: the caller then runs the ES modules.
 */
export async function launchNpm(args: string[]): Promise<boolean> {
  if (args.length === 1 && args[0] === '--write-code-cache') {
    const prepare = () => {
      const source = readFileSync(NPM_CLI_SCRIPT);
      return { compiled: compile(source, undefined), binding: bindingOf(source) };
    };
    process.exit(await writeWarmCache(prepare, NPM_CLI_SCRIPT));
  }
  const path = codeCachePath(NPM_CLI_SCRIPT);
  let cache: CodeCacheRead = { reason: 'absent' };
  let source: Buffer | undefined;
  if (existsSync(path)) {
    try {
      source = readFileSync(NPM_CLI_SCRIPT);
      cache = readCodeCache(path, NPM_CLI_SCRIPT, bindingOf(source));
    } catch (e) {
      cache = { reason: `cannot read ${NPM_CLI_SCRIPT} (${(e as NodeJS.ErrnoException).code ?? String(e)})` };
    }
  }
  if (cache.data && source) {
    const { script, cli } = compile(source, cache.data);
    reportCodeCache(path, cache, script);
    await cli.run(process.argv);
    return true;
  }
  reportCodeCache(path, cache);
  return false;
}
