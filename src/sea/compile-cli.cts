/**
 * Compiling the bundled CLI (src/sea/entry.ts as one CommonJS script, src/sea/cli-bundle.ts), the
 * same way for the node executable (src/sea/launch.ts, from its SEA asset) and the npm CLI
 * (src/sea/npm-launch.cts, from dist/cli/kbundle.cjs), with a V8 code cache when there is one;
 * and the two steps around the cache both share: writing it, and saying whether it was used.
 */
import { Script, constants } from 'node:vm';
import { writeCodeCache, type CodeCacheBinding, type CodeCacheRead } from './code-cache.cjs';

/** What the script exports (src/sea/entry.ts). */
export interface Cli {
  run(argv: string[]): Promise<void>;
  warm(): Promise<void>;
}

/**
 * Compile and evaluate the CLI script `source`. It is ASCII (cli-bundle.ts checks), so it is
 * decoded once as Latin-1, much cheaper than UTF-8 for 2.5 MB; and it is already wrapped as a
 * CommonJS module function, so V8 compiles this one copy. `require` is what the script gets.
 */
export function compileCli(source: Buffer, filename: string, require: NodeJS.Require, cachedData?: Buffer): { script: Script; cli: Cli } {
  const script = new Script(source.toString('latin1'), {
    filename,
    cachedData,
    importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  const mod = { exports: {} as Cli };
  (script.runInThisContext() as (...a: unknown[]) => void)(mod.exports, require, mod, filename, '/');
  return { script, cli: mod.exports };
}

/**
 * `--write-code-cache`: compile the CLI without a cache (`prepare`, which also says what the cache
 * is bound to), evaluate every command module, then write what V8 compiled as the cache of `owner`
 * (the executable, or the npm CLI's script). `forWhat` goes into the message after "V8 code
 * cache". A failure is one error line. Resolves to the exit status.
 */
export async function writeWarmCache(prepare: () => { compiled: { script: Script; cli: Cli }; binding: CodeCacheBinding }, owner: string, forWhat = ''): Promise<number> {
  try {
    const { compiled, binding } = prepare();
    await compiled.cli.warm();
    const data = compiled.script.createCachedData();
    const path = writeCodeCache(owner, binding, data);
    process.stdout.write(`wrote ${path} (${(data.length / 2 ** 20).toFixed(1)} MiB V8 code cache${forWhat}, Node ${process.version} ${process.arch})\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`kbundle: error: --write-code-cache: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

/** With KBUNDLE_DEBUG=code-cache: whether the cache at `path` was used (`script` compiled with it), and if not why. */
export function reportCodeCache(path: string, cache: CodeCacheRead, script?: Script): void {
  if (!process.env.KBUNDLE_DEBUG?.split(',').includes('code-cache')) return;
  const state = cache.data ? (script?.cachedDataRejected ? 'rejected by V8' : 'used') : `not used: ${cache.reason}`;
  process.stderr.write(`kbundle: code cache ${path}: ${state}\n`);
}
