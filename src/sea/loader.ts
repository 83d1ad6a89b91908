/**
 * Main script of the node executable, kept tiny: V8 compiles the main script on every start, and
 * `--version` (what health checks and install scripts run) should cost no more than Node's own
 * start. It is answered here without loading anything; everything else (compiling the CLI, the
 * code cache) is in src/sea/launch.ts, which esbuild keeps unevaluated until this import runs.
 */
import { VERSION } from '../version.js';

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  process.stdout.write(`${VERSION}\n`);
} else {
  void import('./launch.js').then(({ launch }) => launch(args));
}
