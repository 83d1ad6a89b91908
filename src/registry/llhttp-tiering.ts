import { setFlagsFromString } from 'node:v8';

/**
 * undici parses HTTP/1.1 with llhttp compiled to WebAssembly, on the first connection of the
 * process. V8 runs it as Liftoff code and, once a function has used up its tiering budget,
 * recompiles it with TurboFan on a background thread. llhttp is one huge function that spends the
 * default budget within a few requests: a `kbundle verify` then paid ~100 ms of CPU (a third of
 * it, measured with perf, both CLIs) for TurboFan code it hardly used before exiting. Liftoff code
 * is fast enough for llhttp, which parses headers and skips a body with a Content-Length in one
 * step per chunk.
 *
 * So the budget is raised (to roughly a second of execution; a long-running command can still
 * tier up) while undici instantiates llhttp, which takes the budget at that moment, and then set
 * back: V8 accepts a code cache (Node's own for its built-in modules, the node executable's for
 * the CLI) only under the flags it was made with, so a flag left changed would make every built-in
 * module loaded later compile from source (~20 ms more per `verify`). Where V8's default is not
 * known, the budget stays raised: slower built-ins, but still no TurboFan compile.
 */
const RAISED = 1_000_000_000;
/** V8's default `--wasm-tiering-budget` by V8 major version (src/flags/flag-definitions.h). */
const V8_DEFAULT: Record<string, number> = { '11': 1_800_000, '13': 13_000_000 };

let done = false;

/** Runs `firstRequest` (the process's first HTTP request) with the raised budget; later calls just run it. */
export function withLlhttpTiering<T>(firstRequest: () => Promise<T>): Promise<T> {
  if (done) return firstRequest();
  done = true;
  setFlagsFromString(`--wasm-tiering-budget=${RAISED}`);
  const restore = (): void => {
    const dflt = V8_DEFAULT[process.versions.v8.split('.')[0]!];
    if (dflt !== undefined) setFlagsFromString(`--wasm-tiering-budget=${dflt}`);
  };
  try {
    const p = firstRequest();
    void p.then(restore, restore);
    return p;
  } catch (e) {
    restore();
    throw e;
  }
}
