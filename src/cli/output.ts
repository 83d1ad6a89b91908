/** Printing helpers shared by commands: human text, `--json`, and TTY-only progress. */
export interface Printer {
  json: boolean;
  info(line: string): void;
  result(human: string, data: unknown): void;
  progress(total: number, label: string): { add(n: number): void; stop(): void };
}

type CliProgress = typeof import('cli-progress');

export function makePrinter(json: boolean, stream: NodeJS.WriteStream = process.stderr): Printer {
  const tty = !json && stream.isTTY === true && !process.env.CI;
  // The bar library loads only when a terminal will show it: machines and CI never pay for it.
  let lib: CliProgress | undefined;
  const loading = tty ? import('cli-progress').then((m) => (lib = (m as { default?: CliProgress }).default ?? m)) : undefined;
  return {
    json,
    info(line) {
      if (!json) stream.write(`${line}\n`);
    },
    result(human, data) {
      process.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : `${human}\n`);
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
          { format: `${label} [{bar}] {percentage}% | {value}/{total} MiB`, stream, hideCursor: true, clearOnComplete: true },
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
