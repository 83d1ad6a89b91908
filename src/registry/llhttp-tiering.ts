import { setFlagsFromString } from 'node:v8';

/**
 * undici parses HTTP/1.1 with llhttp compiled to WebAssembly, on the first connection of the
 * process. V8 runs it as Liftoff code and, once a function has used up its tiering budget,
 * recompiles it with TurboFan on a background thread. llhttp is one huge function that spends the
 * default budget within a few requests: a `kbundle verify` paid ~100 ms of CPU for it (a third of
 * the command, measured with perf, in both CLIs) for TurboFan code it hardly used before exiting.
 * Liftoff code is fast enough for llhttp, which parses headers and skips a body with a
 * Content-Length in one step per chunk (a 200 MiB pull got faster too).
 *
 * So the budget is raised, to roughly a second of execution (a long-running command can still
 * tier up), before undici instantiates llhttp, which takes the budget at that moment. At run time,
 * not as a command-line flag (e.g. the executable's SEA `execArgv`): V8 accepts a code cache only
 * under the flags the process started with, and a start-up flag made it reject Node's own cache
 * of its built-in modules, which then all compiled from source (+25 ms per `verify`). Set later,
 * V8 keeps accepting them (test/llhttp-tiering.test.ts checks that). A code cache *created* after
 * the raise carries it, though, and is rejected by the next process: the node executable's
 * `--write-code-cache` (src/sea/entry.ts `warm`) therefore never loads the HTTP client.
 */
export const RAISED_TIERING_BUDGET = 1_000_000_000;

let raised = false;

/** Call before undici makes its first HTTP/1.1 connection. */
export function raiseLlhttpTieringBudget(): void {
  if (raised) return;
  raised = true;
  setFlagsFromString(`--wasm-tiering-budget=${RAISED_TIERING_BUDGET}`);
}
