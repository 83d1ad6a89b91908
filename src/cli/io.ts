/**
 * What a command may touch of the process: its output streams, standard input and environment.
 * `main()` receives one, so tests run the CLI in-process with their own buffers and variables
 * instead of patching `process.stdout`.
 */
export interface OutStream {
  write(chunk: string | Uint8Array): unknown;
  isTTY?: boolean;
}

export interface CliIo {
  stdout: OutStream;
  stderr: OutStream;
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
}

/** The real process. Standard input is opened on first use: most commands never read it. */
export function processIo(): CliIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    get stdin() {
      return process.stdin;
    },
    env: process.env,
  };
}

/** Thrown by a command that has printed everything itself and only sets the exit status. */
export class QuietExit {
  constructor(readonly code: number) {}
}
