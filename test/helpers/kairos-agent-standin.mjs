#!/usr/bin/env node
/**
 * `kairos-agent config get <query>` for tests that run bundle scripts off-node: kbundle's own
 * implementation (src/extract/kairos-config.ts, what run.sh finds under `install --root`),
 * reading the config files of `$KBUNDLE_ROOT` (default `/`). Needs `npm run build`.
 */
import { collectKairosConfig, kairosAgentAnswer } from '../../dist/src/extract/kairos-config.js';

const r = kairosAgentAnswer(process.argv.slice(2), () => collectKairosConfig(process.env.KBUNDLE_ROOT || '/'));
process.stdout.write(r.stdout);
process.stderr.write(r.stderr);
process.exitCode = r.code;
