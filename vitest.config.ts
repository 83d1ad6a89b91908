import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Suites start real registries and write real layouts; two cores, so keep forks modest.
    pool: 'forks',
    maxWorkers: 2,
  },
});
