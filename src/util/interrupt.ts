/**
 * Cleanup on SIGINT/SIGTERM. Work that leaves something half-done on disk (an install's staged
 * files, a running script) registers a synchronous cleanup; on the first signal they run, newest
 * first, and the process exits with 128 + the signal number, as a shell reports it.
 */
type Cleanup = () => void;

const cleanups = new Set<Cleanup>();
let installed = false;

function onSignal(signal: NodeJS.Signals): void {
  for (const fn of [...cleanups].reverse()) {
    try {
      fn();
    } catch {
      /* keep cleaning up the rest */
    }
  }
  process.exit(signal === 'SIGINT' ? 130 : 143);
}

/** Run `fn` if the process is interrupted before the returned function is called. */
export function onInterrupt(fn: Cleanup): () => void {
  if (!installed) {
    installed = true;
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  }
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}
