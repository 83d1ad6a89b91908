/**
 * V8 flags both CLIs run commands with: the npm one sets them before it runs one
 * (src/cli/kbundle.ts); the node executable has them in its SEA `execArgv` (src/sea/build.ts), in
 * force before V8 starts, so its code cache is made and read under the same flags.
 *
 * `--wasm-tiering-budget`: undici parses HTTP with llhttp compiled to WebAssembly. V8 compiles it
 * with Liftoff, then, once a function has run for the default budget, recompiles it with TurboFan
 * on a background thread. llhttp is one huge function, and a `kbundle verify` spends its budget
 * within a few requests: the TurboFan compile then cost ~100 ms of CPU per command (a third of
 * a node's `verify`, measured with perf) and its result was hardly used before the process exited.
 * With a budget of roughly a second of execution, short commands do not tier up; a long-running
 * one still can. Liftoff code is fast enough for llhttp: it parses headers, and skips a body with a
 * Content-Length in one step per chunk.
 */
export const V8_FLAGS: readonly string[] = ['--wasm-tiering-budget=1000000000'];
