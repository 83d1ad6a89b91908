/**
 * The CLI of the node executable (`npm run sea`): esbuild turns this into one CommonJS script with
 * every dependency inside, stored in the executable as the SEA asset `cli.cjs`. src/sea/loader.ts
 * compiles it and calls `run` (a command) or `warm` (`--write-code-cache`).
 * Same start-up contract as src/cli/kbundle.cts: the libuv pool size is set before anything uses it.
 */
process.env.UV_THREADPOOL_SIZE ??= '8';

/** Runs the command in `argv` (as process.argv) and exits with its status. */
export async function run(argv: string[]): Promise<void> {
  const { main } = await import('../cli/main.js');
  // Exit as soon as the command is done: idle keep-alive sockets must not hold the process.
  process.exit(await main(argv));
}

/**
 * Evaluates every command module and registers every command, running none: what the code cache
 * written by `--write-code-cache` should hold compiled. Prints nothing. It must not load the HTTP
 * client: that raises a V8 flag at run time (src/registry/llhttp-tiering.ts), and a cache created
 * after it is rejected by every later start (test/sea-code-cache.test.ts would see it unused).
 */
export async function warm(): Promise<void> {
  const { createProgram } = await import('../cli/main.js');
  const { processIo } = await import('../cli/io.js');
  const silent = { write: () => true };
  await createProgram(['kbundle', 'kbundle'], Object.assign(processIo(), { stdout: silent, stderr: silent }));
}
