/**
 * Everything the node executable does besides `--version` (src/sea/loader.ts): compile the CLI,
 * stored in the executable as the SEA asset `cli.cjs`, with the V8 code cache next to the
 * executable when there is a trustworthy one for this exact build (src/sea/code-cache.ts), and run
 * it; or, for `--write-code-cache`, write that cache.
 */
import { getRawAsset } from 'node:sea';
import { Script, constants } from 'node:vm';
import { VERSION } from '../version.js';
import { codeCachePath, readCodeCache, writeCodeCache, type CodeCacheBinding } from './code-cache.js';

/** sha256 of the `cli.cjs` asset, set by src/sea/build.ts (esbuild `define`). */
declare const KBUNDLE_CLI_SHA256: string;

interface Cli {
  run(argv: string[]): Promise<void>;
  warm(): Promise<void>;
}

/** The CLI as a CommonJS module function, given the executable's require (built-ins only). */
function compileCli(cachedData: Buffer | undefined): { script: Script; cli: Cli } {
  // The script is ASCII (src/sea/build.ts checks): read in place and copied once as Latin-1, which
  // is much cheaper than getAsset's copy plus UTF-8 decoding of 3 MB. It is already wrapped as a
  // CommonJS module function (build.ts), so V8 compiles this one copy.
  const source = Buffer.from(getRawAsset('cli.cjs') as ArrayBuffer).toString('latin1');
  const script = new Script(source, {
    filename: 'kbundle-cli.cjs',
    cachedData,
    importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  const mod = { exports: {} as Cli };
  (script.runInThisContext() as (...a: unknown[]) => void)(mod.exports, require, mod, 'kbundle-cli.cjs', '/');
  return { script, cli: mod.exports };
}

export function launch(args: string[]): void {
  const binding: CodeCacheBinding = { cliSha256: KBUNDLE_CLI_SHA256, nodeVersion: process.version, arch: process.arch };
  if (args.length === 1 && args[0] === '--write-code-cache') {
    // Compile with every command module evaluated, then keep what V8 compiled.
    const { script, cli } = compileCli(undefined);
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
    const { script, cli } = compileCli(cache.data);
    if (process.env.KBUNDLE_DEBUG?.split(',').includes('code-cache')) {
      const state = cache.data ? (script.cachedDataRejected ? 'rejected by V8' : 'used') : `not used: ${cache.reason}`;
      process.stderr.write(`kbundle: code cache ${path}: ${state}\n`);
    }
    void cli.run(process.argv);
  }
}
