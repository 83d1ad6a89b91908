#!/usr/bin/env node
// File reads, hashing helpers and parallel gzip all share libuv's thread pool; the default of
// 4 threads lets compression starve reads. Must be set before the pool starts.
process.env.UV_THREADPOOL_SIZE ??= '8';
const { main } = await import('../dist/src/cli/main.js');
process.exitCode = await main(process.argv);
