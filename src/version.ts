/** kbundle's version, as `--version` prints it (kept equal to package.json's by test/npm-package.test.ts). */
export const VERSION = '0.1.0';
