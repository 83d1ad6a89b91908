import { Command, CommanderError } from 'commander';
import { isUserError } from '../errors.js';
type Register = (program: Command) => void;

/**
 * Command name → the module that registers it. Only the invoked command's module is imported:
 * a node verifying a bundle should not pay for the builder, sysext or catalog code.
 */
const COMMAND_MODULES: Record<string, () => Promise<Register>> = {
  build: async () => (await import('./build.js')).registerBuild,
  validate: async () => (await import('./build.js')).registerBuild,
  catalog: async () => (await import('./catalog.js')).registerCatalog,
  install: async () => (await import('./install.js')).registerInstall,
  push: async () => (await import('./transfer.js')).registerTransfer,
  pull: async () => (await import('./transfer.js')).registerTransfer,
  copy: async () => (await import('./transfer.js')).registerTransfer,
  inspect: async () => (await import('./transfer.js')).registerTransfer,
  sysext: async () => (await import('./sysext.js')).registerSysext,
  confext: async () => (await import('./sysext.js')).registerSysext,
  key: async () => (await import('./sign.js')).registerSigning,
  sign: async () => (await import('./sign.js')).registerSigning,
  verify: async () => (await import('./sign.js')).registerSigning,
};

export async function createProgram(argv: string[] = []): Promise<Command> {
  const program = new Command('kbundle')
    .description('Build, sign, push, verify and install Kairos bundles and system extensions as OCI images')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  const first = argv.slice(2).find((a) => !a.startsWith('-'));
  const wanted = first && COMMAND_MODULES[first] ? [COMMAND_MODULES[first]!] : Object.values(COMMAND_MODULES);
  const registers = new Set(await Promise.all(wanted.map((load) => load())));
  for (const register of registers) register(program);
  return program;
}

/** Run the CLI; returns the exit code. User errors print one clear message, never a stack. */
export async function main(argv: string[]): Promise<number> {
  try {
    const program = await createProgram(argv);
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (isUserError(e)) {
      process.stderr.write(`kbundle: error: ${e.message}\n`);
      if (e.hint) process.stderr.write(`  hint: ${e.hint}\n`);
      return e.exitCode ?? 1;
    }
    process.stderr.write(`kbundle: internal error (please report): ${(e as Error)?.stack ?? String(e)}\n`);
    return 70;
  }
}
