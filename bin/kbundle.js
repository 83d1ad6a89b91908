#!/usr/bin/env node
// File reads, hashing helpers and parallel gzip all share libuv's thread pool; the default of
// 4 threads lets compression starve reads. Must be set before the pool starts.
process.env.UV_THREADPOOL_SIZE ??= '8';
const { main } = await import('../dist/src/cli/main.js');
// Exit as soon as the command is done: idle keep-alive sockets must not hold a node for ~100 ms.
// (stdout/stderr writes to pipes and files are synchronous on Linux, so nothing is lost.)
process.exit(await main(process.argv));
