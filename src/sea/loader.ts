/**
 * Main script of the node executable, kept tiny: V8 compiles the main script on every start, and
 * compiling the whole 4 MB CLI costs more than Node's own start-up. `--version` (what health checks
 * and install scripts run) is answered here; anything else compiles the CLI, stored in the
 * executable as the SEA asset `cli.cjs`, and runs it.
 */
import { getAsset } from 'node:sea';
import { Script, constants } from 'node:vm';
import { VERSION } from '../version.js';

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  process.stdout.write(`${VERSION}\n`);
} else {
  const source = getAsset('cli.cjs', 'utf8');
  // The CLI is a CommonJS bundle: wrapped as a module function and given the executable's require
  // (built-in modules only: everything else is inside the bundle).
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {
    filename: 'kbundle-cli.cjs',
    importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  const mod = { exports: {} };
  (script.runInThisContext() as (...a: unknown[]) => void)(mod.exports, require, mod, 'kbundle-cli.cjs', '/');
}
