/**
 * Main script of the node executable, kept tiny: V8 compiles the main script on every start, and
 * `--version` (what health checks and install scripts run) should cost no more than Node's own
 * start. It is answered here without loading anything; everything else (compiling the CLI, the
 * code cache) is in src/sea/launch.ts, which esbuild keeps unevaluated until this import runs.
 */
import { writeSync } from 'node:fs';
import { VERSION } from '../version.js';

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  printVersion();
} else {
  void import('./launch.js').then(({ launch }) => launch(args));
}

/**
 * Straight to fd 1: `process.stdout` would first load Node's stream modules (and `net` for a pipe),
 * about 4 ms of a 75 ms start. Whatever that write does not take (a full non-blocking pipe, an
 * error) goes through `process.stdout` as before.
 */
function printVersion(): void {
  const line = Buffer.from(`${VERSION}\n`);
  let written = 0;
  try {
    written = writeSync(1, line);
  } catch {
    /* process.stdout below reports it as it always did */
  }
  if (written < line.length) process.stdout.write(line.subarray(written));
}
