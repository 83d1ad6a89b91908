/**
 * Everything the node executable does besides `--version` (src/sea/loader.ts): compile the CLI,
 * stored in the executable as the SEA asset `cli.cjs`, with the V8 code cache next to the
 * executable when there is a trustworthy one for this exact build (src/sea/code-cache.ts), and run
 * it; or, for `--write-code-cache`, write that cache.
 */
import { getRawAsset } from 'node:sea';
import { VERSION } from '../version.js';
import { compileCli } from './compile-cli.js';
import { codeCachePath, readCodeCache, writeCodeCache, type CodeCacheBinding } from './code-cache.js';

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
    // Compile with every command module evaluated, then keep what V8 compiled.
    const { script, cli } = compileAsset(undefined);
    void cli.warm().then(() => {
      const data = script.createCachedData();
      try {
        const path = writeCodeCache(process.execPath, binding, data);
        process.stdout.write(`wrote ${path} (${(data.length / 2 ** 20).toFixed(1)} MiB V8 code cache for kbundle ${VERSION}, Node ${process.version} ${process.arch})\n`);
      } catch (e) {
        process.stderr.write(`kbundle: error: --write-code-cache: ${e instanceof Error ? e.message : String(e)}\n`);
        process.exitCode = 1;
      }
    });
  } else {
    const path = codeCachePath(process.execPath);
    const cache = readCodeCache(path, process.execPath, binding);
    const { script, cli } = compileAsset(cache.data);
    if (process.env.KBUNDLE_DEBUG?.split(',').includes('code-cache')) {
      const state = cache.data ? (script.cachedDataRejected ? 'rejected by V8' : 'used') : `not used: ${cache.reason}`;
      process.stderr.write(`kbundle: code cache ${path}: ${state}\n`);
    }
    void cli.run(process.argv);
  }
}
