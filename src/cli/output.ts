import { SingleBar, Presets } from 'cli-progress';

/** Printing helpers shared by commands: human text, `--json`, and TTY-only progress. */
export interface Printer {
  json: boolean;
  info(line: string): void;
  result(human: string, data: unknown): void;
  progress(total: number, label: string): { add(n: number): void; stop(): void };
}

export function makePrinter(json: boolean, stream: NodeJS.WriteStream = process.stderr): Printer {
  const tty = !json && stream.isTTY === true && !process.env.CI;
  return {
    json,
    info(line) {
      if (!json) stream.write(`${line}\n`);
    },
    result(human, data) {
      process.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : `${human}\n`);
    },
    progress(total, label) {
      if (!tty || total <= 0) return { add() {}, stop() {} };
      const bar = new SingleBar(
        { format: `${label} [{bar}] {percentage}% | {value}/{total} MiB`, stream, hideCursor: true, clearOnComplete: true },
        Presets.shades_classic,
      );
      const mib = (n: number) => Math.round((n / 1048576) * 10) / 10;
      let done = 0;
      bar.start(mib(total), 0);
      return {
        add(n) {
          done += n;
          bar.update(mib(done));
        },
        stop() {
          bar.stop();
        },
      };
    },
  };
}
