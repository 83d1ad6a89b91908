import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { KbError } from '../errors.js';
import { kairosAgentAnswer, type ConfigValue } from '../extract/kairos-config.js';
import { QuietExit, type CliIo } from './io.js';

/**
 * Hidden: `kairos-agent` inside the jail of a confined run.sh is a two-line script that runs
 * `kbundle __kairos-agent config get KEY` with KBUNDLE_KAIROS_CONFIG naming the merged config.
 */
export function registerKairosAgent(program: Command, io: CliIo): void {
  program
    .command('__kairos-agent', { hidden: true })
    .argument('[args...]')
    .allowUnknownOption()
    .helpOption(false)
    .action((args: string[]) => {
      const file = process.env.KBUNDLE_KAIROS_CONFIG;
      if (!file) throw new KbError('INVALID_INPUT', '__kairos-agent: KBUNDLE_KAIROS_CONFIG is not set', { hint: 'this command is what run.sh calls as kairos-agent under install --root' });
      const r = kairosAgentAnswer(args, () => JSON.parse(readFileSync(file, 'utf8')) as ConfigValue);
      io.stdout.write(r.stdout);
      io.stderr.write(r.stderr);
      if (r.code !== 0) throw new QuietExit(r.code);
    });
}
