import { Command, CommanderError } from 'commander';
import { isUserError } from '../errors.js';
import { registerBuild } from './build.js';
import { registerCatalog } from './catalog.js';
import { registerInstall } from './install.js';
import { registerTransfer } from './transfer.js';
import { registerSigning } from './sign.js';

export function createProgram(): Command {
  const program = new Command('kbundle')
    .description('Build, sign, push, verify and install Kairos bundles and system extensions as OCI images')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  registerBuild(program);
  registerCatalog(program);
  registerInstall(program);
  registerTransfer(program);
  registerSigning(program);
  return program;
}

/** Run the CLI; returns the exit code. User errors print one clear message, never a stack. */
export async function main(argv: string[]): Promise<number> {
  const program = createProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (isUserError(e)) {
      process.stderr.write(`kbundle: error: ${e.message}\n`);
      if (e.hint) process.stderr.write(`  hint: ${e.hint}\n`);
      return e.exitCode;
    }
    process.stderr.write(`kbundle: internal error (please report): ${(e as Error)?.stack ?? String(e)}\n`);
    return 70;
  }
}
