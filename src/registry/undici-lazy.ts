/**
 * undici costs ~100 ms to import on this machine class; load it only when a command actually
 * talks HTTP, so `kbundle build` and friends start fast.
 */
type Undici = typeof import('undici');
let loaded: Promise<Undici> | undefined;
export function undici(): Promise<Undici> {
  // Bundled (dist/cli), a dynamic import of this CommonJS package yields { default: exports }.
  loaded ??= import('undici').then((m) => ((m as Partial<Undici>).Agent ? m : (m as unknown as { default: Undici }).default));
  return loaded;
}
