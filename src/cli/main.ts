import { Command, CommanderError } from 'commander';
import { fromErrno, KbError } from '../errors.js';
import { VERSION } from '../version.js';
import { EXIT_INTERNAL, EXIT_USAGE, exitCodeOf } from './exit-codes.js';
import { processIo, QuietExit, type CliIo } from './io.js';

type Register = (program: Command, io: CliIo) => void;

/**
 * Command name → the module that registers it. Only the invoked command's module is imported:
 * a node verifying a bundle should not pay for the builder, sysext or catalog code.
 */
const COMMAND_MODULES: Record<string, () => Promise<Register>> = {
  build: async () => (await import('./build.js')).registerBuild,
  validate: async () => (await import('./build.js')).registerBuild,
  import: async () => (await import('./import.js')).registerImport,
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
  attest: async () => (await import('./attest.js')).registerAttest,
  'verify-attestation': async () => (await import('./attest.js')).registerAttest,
  policy: async () => (await import('./policy.js')).registerPolicy,
  image: async () => (await import('./image.js')).registerImage,
  '__kairos-agent': async () => (await import('./kairos-agent.js')).registerKairosAgent,
  'sign-blob': async () => (await import('./blob.js')).registerBlob,
  'verify-blob': async () => (await import('./blob.js')).registerBlob,
  trust: async () => (await import('./trust.js')).registerTrust,
  status: async () => (await import('./status.js')).registerStatus,
  rollout: async () => (await import('./rollout.js')).registerRollout,
};

export async function createProgram(argv: string[] = [], io: CliIo = processIo()): Promise<Command> {
  const program = new Command('kbundle')
    .description('Build, sign, push, verify and install Kairos bundles and system extensions as OCI images')
    .version(VERSION)
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
  const args = argv.slice(2);
  const first = args.find((a) => !a.startsWith('-'));
  // `--version` needs no command module at all: it is what scripts and health checks run most.
  const versionOnly = args.length === 1 && (args[0] === '--version' || args[0] === '-V');
  const wanted = versionOnly ? [] : first && COMMAND_MODULES[first] ? [COMMAND_MODULES[first]!] : Object.values(COMMAND_MODULES);
  const registers = new Set(await Promise.all(wanted.map((load) => load())));
  for (const register of registers) register(program, io);
  return program;
}

/** How an error reaches the user: one message (and hint) for a KbError, the stack for a bug. */
export function reportError(e: unknown, io: CliIo): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : EXIT_USAGE;
  // A file-system failure is the user's path, not a bug: said as such, without a stack.
  e = fromErrno(e) ?? e;
  if (e instanceof QuietExit) return e.code;
  if (e instanceof KbError) {
    const label = e.code === 'INTERNAL' ? 'internal error (please report)' : 'error';
    io.stderr.write(`kbundle: ${label}: ${e.message}\n`);
    if (e.hint) io.stderr.write(`  hint: ${e.hint}\n`);
    return exitCodeOf(e.code);
  }
  io.stderr.write(`kbundle: internal error (please report): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  return EXIT_INTERNAL;
}

/** Run the CLI (`argv` as process.argv: node, script, args…); returns the exit code. */
export async function main(argv: string[], io: CliIo = processIo()): Promise<number> {
  try {
    const program = await createProgram(argv, io);
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    return reportError(e, io);
  }
}
