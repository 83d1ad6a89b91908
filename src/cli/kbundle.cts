#!/usr/bin/env node
// The kbundle command (the npm bin). CommonJS on purpose: an ES module entry starts Node's ES module
// loader first, ~10 ms of every command (`--version` 86 → 76 ms, src/sea/README.md), and the CLI
// itself runs as one CommonJS script anyway.
// File reads, hashing helpers and parallel gzip all share libuv's thread pool; the default of 4
// threads lets compression starve reads. Must be set before the pool starts, hence a require
// after it (an import would be hoisted above it).
process.env.UV_THREADPOOL_SIZE ??= '8';
// The whole CLI as one script compiled from its V8 code cache (src/sea/npm-launch.cts), when
// `npm run build` or `kbundle --write-code-cache` made one for this Node.
// eslint-disable-next-line @typescript-eslint/no-require-imports -- it must run after the line above
const { launchNpm } = require('../sea/npm-launch.cjs') as typeof import('../sea/npm-launch.cjs');
void launchNpm(process.argv.slice(2)).then(async (ran) => {
  if (ran) return;
  // Otherwise dist/cli/main.js, the ES module bundle of dist/src/cli/main.js (npm run build): one
  // module graph instead of ~150 files, which halves start-up for short commands.
  const { main } = (await import('../../cli/main.js' as string)) as { main: (argv: string[]) => Promise<number> };
  // Exit as soon as the command is done: idle keep-alive sockets must not hold a node for ~100 ms.
  // (stdout/stderr writes to pipes and files are synchronous on Linux, so nothing is lost.)
  process.exit(await main(process.argv));
});
