import type { CliIo } from './io.js';

/** Printing helpers shared by commands: human text, `--json`, and TTY-only progress. */
export interface Printer {
  /** The streams and environment it writes to, for callees that need more (stdin, env). */
  io: CliIo;
  json: boolean;
  /** Progress bars will show (stderr is a terminal, not --json, not CI). */
  tty: boolean;
  info(line: string): void;
  warn(message: string): void;
  result(human: string, data: unknown): void;
  /** Bytes to stdout as they are (e.g. `inspect --raw`). */
  raw(bytes: Uint8Array): void;
  progress(total: number, label: string): { add(n: number): void; stop(): void };
}

type CliProgress = typeof import('cli-progress');

export function makePrinter(json: boolean, io: CliIo): Printer {
  const stream = io.stderr;
  const tty = !json && stream.isTTY === true && !io.env.CI;
  // The bar library loads only when a terminal will show it: machines and CI never pay for it.
  let lib: CliProgress | undefined;
  const loading = tty ? import('cli-progress').then((m) => (lib = (m as { default?: CliProgress }).default ?? m)) : undefined;
  return {
    io,
    json,
    tty,
    info(line) {
      if (!json) stream.write(`${line}\n`);
    },
    warn(message) {
      stream.write(`kbundle: warning: ${message}\n`);
    },
    result(human, data) {
      io.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : `${human}\n`);
    },
    raw(bytes) {
      io.stdout.write(bytes);
    },
    progress(total, label) {
      if (!loading || total <= 0) return { add() {}, stop() {} };
      const mib = (n: number) => Math.round((n / 1048576) * 10) / 10;
      let done = 0;
      let stopped = false;
      let bar: InstanceType<CliProgress['SingleBar']> | undefined;
      const start = () => {
        if (bar || stopped || !lib) return;
        bar = new lib.SingleBar(
          { format: `${label} [{bar}] {percentage}% | {value}/{total} MiB`, stream: stream as NodeJS.WriteStream /* a TTY here: the real stderr */, hideCursor: true, clearOnComplete: true },
          lib.Presets.shades_classic,
        );
        bar.start(mib(total), mib(done));
      };
      start();
      void loading.then(start, () => undefined);
      return {
        add(n) {
          done += n;
          bar?.update(mib(done));
        },
        stop() {
          stopped = true;
          bar?.stop();
        },
      };
    },
  };
}
