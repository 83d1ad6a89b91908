#!/usr/bin/env node
// The kbundle command. File reads, hashing helpers and parallel gzip all share libuv's thread
// pool; the default of 4 threads lets compression starve reads. Must be set before the pool
// starts, hence only dynamic imports below.
process.env.UV_THREADPOOL_SIZE ??= '8';
// The whole CLI as one script compiled from its V8 code cache (src/sea/npm-launch.ts), when
// `npm run build` or `kbundle --write-code-cache` made one for this Node.
const { launchNpm } = await import('../sea/npm-launch.js');
if (!(await launchNpm(process.argv.slice(2)))) {
  // Otherwise dist/cli/main.js, the ES module bundle of dist/src/cli/main.js (npm run build): one
  // module graph instead of ~150 files, which halves start-up for short commands.
  const { main } = (await import('../../cli/main.js' as string)) as typeof import('./main.js');
  // Exit as soon as the command is done: idle keep-alive sockets must not hold a node for ~100 ms.
  // (stdout/stderr writes to pipes and files are synchronous on Linux, so nothing is lost.)
  process.exit(await main(process.argv));
}
