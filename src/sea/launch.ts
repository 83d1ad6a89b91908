/**
 * Everything the node executable does besides `--version` (src/sea/loader.ts): compile the CLI,
 * stored in the executable as the SEA asset `cli.cjs`, with the V8 code cache next to the
 * executable when there is a trustworthy one for this exact build (src/sea/code-cache.cts), and run
 * it; or, for `--write-code-cache`, write that cache.
 */
import { getRawAsset } from 'node:sea';
import { VERSION } from '../version.js';
import { compileCli, reportCodeCache, writeWarmCache } from './compile-cli.cjs';
import { codeCachePath, readCodeCache, type CodeCacheBinding } from './code-cache.cjs';

/** sha256 of the `cli.cjs` asset, set by src/sea/build.ts (esbuild `define`). */
declare const KBUNDLE_CLI_SHA256: string;

/** The CLI, stored in the executable as the SEA asset `cli.cjs`, given the executable's require (built-ins only). */
function compileAsset(cachedData: Buffer | undefined): ReturnType<typeof compileCli> {
  // Read in place (getRawAsset), not through getAsset's copy.
  return compileCli(Buffer.from(getRawAsset('cli.cjs') as ArrayBuffer), 'kbundle-cli.cjs', require, cachedData);
}

export function launch(args: string[]): void {
  const binding: CodeCacheBinding = { cliSha256: KBUNDLE_CLI_SHA256, nodeVersion: process.version, arch: process.arch };
  if (args.length === 1 && args[0] === '--write-code-cache') {
    void writeWarmCache(() => ({ compiled: compileAsset(undefined), binding }), process.execPath, ` for kbundle ${VERSION}`).then((status) => {
      process.exitCode = status;
    });
  } else {
    const path = codeCachePath(process.execPath);
    const cache = readCodeCache(path, process.execPath, binding);
    const { script, cli } = compileAsset(cache.data);
    reportCodeCache(path, cache, script);
    void cli.run(process.argv);
  }
}
