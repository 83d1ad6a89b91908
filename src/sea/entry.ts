/**
 * Entry point of the node executable (`npm run sea`): esbuild turns this into one CommonJS script
 * with every dependency inside, which Node's single-executable support runs as the main script.
 * Same start-up contract as src/cli/kbundle.ts: the libuv pool size is set before anything uses it.
 */
process.env.UV_THREADPOOL_SIZE ??= '8';

void import('../cli/main.js').then(async ({ main }) => {
  // Exit as soon as the command is done: idle keep-alive sockets must not hold the process.
  process.exit(await main(process.argv));
});
