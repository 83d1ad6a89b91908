// ESLint flat config: eslint's and typescript-eslint's recommended rules over src, test and bench.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'out/', 'node_modules/', 'registry-test/', 'bundles/', 'test/fixtures/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2023, sourceType: 'module', globals: globals.node },
    rules: {
      // `_`-prefixed parameters are placeholders required by a callback's signature.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Async generators cannot be arrow functions; `self` is the one accepted alias of `this` for them.
      '@typescript-eslint/no-this-alias': ['error', { allowedNames: ['self'] }],
    },
  },
  {
    files: ['test/**'],
    // Tests take apart arbitrary JSON documents (manifests, bundles, Rekor entries) to tamper with them.
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
