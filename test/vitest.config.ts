import { resolve } from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // This file lives in test/; the project root is one level up.
  root: resolve(import.meta.dirname, '..'),
  // TypeScript in .cts files too (the npm bin and its start-up helpers are CommonJS); vite's
  // default transforms only .ts, .mts and .tsx.
  oxc: { include: /\.([cm]?ts|tsx)$/ },
  test: {
    include: ['test/**/*.test.ts'],
    // Every synchronous child process gets a deadline below the test timeout (see the file).
    setupFiles: ['test/helpers/spawn-deadline.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Suites start real registries and write real layouts; two cores, so keep forks modest.
    pool: 'forks',
    maxWorkers: 2,
  },
});
