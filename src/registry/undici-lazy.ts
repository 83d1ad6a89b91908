/**
 * undici costs ~100 ms to import on this machine class; load it only when a command actually
 * talks HTTP, so `kbundle build` and friends start fast.
 */
let loaded: Promise<typeof import('undici')> | undefined;
export function undici(): Promise<typeof import('undici')> {
  loaded ??= import('undici');
  return loaded;
}
