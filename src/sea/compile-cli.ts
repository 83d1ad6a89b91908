/**
 * Compiling the bundled CLI (src/sea/entry.ts as one CommonJS script, src/sea/cli-bundle.ts), the
 * same way for the node executable (src/sea/launch.ts, from its SEA asset) and the npm CLI
 * (src/sea/npm-launch.ts, from dist/cli/kbundle.cjs), with a V8 code cache when there is one.
 */
import { Script, constants } from 'node:vm';

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
