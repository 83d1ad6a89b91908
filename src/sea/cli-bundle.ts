/**
 * The CLI as one CommonJS script (esbuild): what the node executable carries as its `cli.cjs`
 * asset (src/sea/build.ts) and what the npm CLI runs with its V8 code cache (src/sea/npm-launch.cts,
 * written by src/sea/npm-bundle.ts). Both are src/sea/entry.ts and everything it reaches.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Plugin } from 'esbuild';

/** An esbuild plugin that gives `module`, when `importer` imports it, the source `contents(path)` instead. */
function substitute(name: string, namespace: string, rules: { importer: RegExp; module: RegExp }[], contents: (path: string) => string): Plugin {
  return {
    name,
    setup(build) {
      for (const { importer, module } of rules) {
        build.onResolve({ filter: module }, (args) => (importer.test(args.importer) ? { path: args.path, namespace } : undefined));
      }
      build.onLoad({ filter: /.*/, namespace }, (args) => ({ contents: contents(args.path), loader: 'js' }));
    },
  };
}

/**
 * Built-ins a dependency requires when it is loaded but kbundle never uses through it: commander
 * loads node:child_process (one of the costlier built-ins to start) for executable subcommands,
 * which kbundle has none of. Such a require gets an object that loads the module on first use.
 */
const LAZY_BUILTINS = [{ importer: /[\\/]node_modules[\\/]commander[\\/]/, module: /^(node:)?child_process$/ }];

const lazyBuiltins = substitute(
  'lazy-builtins',
  'lazy-builtin',
  LAZY_BUILTINS,
  (path) => `let m;\nmodule.exports = new Proxy({}, { get: (_t, key) => (m ??= require(${JSON.stringify(path)}))[key] });\n`,
);

/**
 * Optional dependencies a dependency loads inside try/catch and kbundle never uses through it:
 * minipass-fetch (make-fetch-happen, for keyless signing) loads iconv-lite (0.5 MB, a sixth of the
 * CLI script) only for `textConverted()`, which nothing calls; undici's HTTP/2 client loads
 * node:http2 (3 ms of every command's start, with Node's http2 internals) although kbundle's
 * agents never offer h2 (`allowH2` is off). Left out, the require throws as if the module were
 * not there, which both handle (undici then has no HTTP/2, as on a Node built without it).
 */
const LEFT_OUT = [
  { importer: /[\\/]node_modules[\\/]minipass-fetch[\\/]/, module: /^iconv-lite$/ },
  { importer: /[\\/]node_modules[\\/]undici[\\/]lib[\\/]dispatcher[\\/]client-h2\.js$/, module: /^(node:)?http2$/ },
];

const leftOut = substitute(
  'left-out-optional-dependencies',
  'left-out',
  LEFT_OUT,
  (path) => `throw Object.assign(new Error(${JSON.stringify(`${path} is not in the kbundle executable`)}), { code: 'MODULE_NOT_FOUND' });\n`,
);

/**
 * The CLI script is wrapped as a CommonJS module function here, at build time: its loaders
 * (src/sea/launch.ts, src/sea/npm-launch.cts) compile it as it is, instead of concatenating the
 * wrapper at run time, which made V8 flatten a second copy of the 3 MB source on every start.
 */
const CLI_WRAPPER = { head: '(function (exports, require, module, __filename, __dirname) {', tail: '})' };

export interface BundleOptions {
  /** esbuild `define`s (compile-time constants). */
  define?: Record<string, string>;
  /** Wrap the script as a CommonJS module function (CLI_WRAPPER). */
  wrap?: boolean;
  /** The Node.js major version the script must run on (syntax is lowered for it). */
  nodeMajor: number;
}

/** One CommonJS script holding `entry` and everything it reaches (built-ins aside). */
export async function bundle(entry: string, outfile: string, { define = {}, wrap = false, nodeMajor }: BundleOptions): Promise<string> {
  const esbuild = await import('esbuild');
  await esbuild.build({
    plugins: [lazyBuiltins, leftOut],
    ...(wrap ? { banner: { js: CLI_WRAPPER.head }, footer: { js: CLI_WRAPPER.tail } } : {}),
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: `node${nodeMajor}`,
    // Only trust.ts reads import.meta, on the ESM path the bundle never takes (it has `require`).
    logOverride: { 'empty-import-meta': 'silent' },
    // Built-ins loaded on first use (`await import('node:child_process')`, …) become `require`s: a
    // real import() would start Node's ES module loader (~10 ms) for a CommonJS script.
    supported: { 'dynamic-import': false },
    legalComments: 'none',
    // ASCII only (the loader decodes it as Latin-1) and without comments and blank space: V8 scans
    // every byte of the script on each compile without a code cache. Names stay, for stack traces.
    charset: 'ascii',
    minifyWhitespace: true,
    minifySyntax: true,
    define,
    logLevel: 'warning',
  });
  return outfile;
}

/**
 * The whole CLI (src/sea/entry.ts) as one wrapped CommonJS script at `outfile`. It must be
 * ASCII: its loaders read it as Latin-1 (one copy, no UTF-8 decoding), and esbuild's charset
 * escapes the rest.
 */
export async function bundleCliScript(outfile: string, nodeMajor: number): Promise<string> {
  const entry = join(dirname(fileURLToPath(import.meta.url)), 'entry.js');
  await bundle(entry, outfile, { wrap: true, nodeMajor });
  const nonAscii = readFileSync(outfile).findIndex((b) => b > 0x7f);
  if (nonAscii >= 0) throw new Error(`${outfile}: byte ${nonAscii} is not ASCII; the loader reads the CLI as Latin-1`);
  return outfile;
}
