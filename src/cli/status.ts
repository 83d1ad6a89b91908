import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { errorMessage, KbError, UserError } from '../errors.js';
import { INSTALLED_KINDS, type InstalledKind } from '../state/records.js';
import type { CliIo } from './io.js';
import { makePrinter } from './output.js';

interface StatusFlags {
  root: string;
  json?: boolean;
  check?: string;
  kind: string;
  terminationLog?: string;
  requires?: string;
}

/**
 * `kbundle status`: what kbundle installed under a root. With `--check`, the read-only verdict a
 * Kairos operator preflight needs: a reason to skip this node (written to --termination-log,
 * which the operator reads as "skip") or nothing (proceed).
 */
export function registerStatus(program: Command, io: CliIo): void {
  program
    .command('status')
    .description('list the bundles and system extensions installed under a root (digest, signer, when); --check: should this node skip an install?')
    .option('--root <dir>', 'node root file system', '/')
    .option('--json', 'print JSON')
    .option('--check <target>', 'digest-pinned target (run://…@sha256:…, or oci:…@sha256:… with --kind sysext): is it already installed here?')
    .option('--kind <kind>', `what --check installs: ${INSTALLED_KINDS.join(', ')}`, 'bundle')
    .option('--requires <json>', "with --check: the image's requires: as JSON (kbundle rollout passes them); a node that does not meet them is skipped")
    .option('--termination-log <file>', 'with --check: write the reason to skip here (a Kubernetes preflight passes /dev/termination-log); nothing is written to proceed')
    .action(async (o: StatusFlags) => {
      const out = makePrinter(!!o.json, io);
      const { nodeStatus, describeStatus, statusJson, parseWanted, alreadyInstalled } = await import('../state/status.js');
      if (!(INSTALLED_KINDS as readonly string[]).includes(o.kind)) throw new UserError(`--kind: "${o.kind}" must be one of ${INSTALLED_KINDS.join(', ')}`);
      if ((o.terminationLog || o.requires) && !o.check) throw new UserError('--termination-log and --requires go with --check');
      const wanted = o.check ? parseWanted(o.check, o.kind as InstalledKind) : undefined;
      const req = o.requires === undefined ? undefined : await import('../requires/requires.js');
      let requires: import('../requires/requires.js').Requires | undefined;
      if (req && o.requires !== undefined) {
        let raw: unknown;
        try {
          raw = JSON.parse(o.requires);
        } catch {
          throw new UserError('--requires: not JSON', 'kbundle rollout writes it; e.g. {"flavor":["ubuntu"],"systemd":254}');
        }
        requires = req.parseRequires(raw, '--requires');
      }
      const status = await nodeStatus(o.root);
      if (!wanted) {
        out.result(describeStatus(status), statusJson(status));
        return;
      }
      const unmet = requires && req ? req.unmetRequires(requires, await req.readNodeFacts(status.root)) : [];
      const reasons = [alreadyInstalled(status, wanted), unmet.length ? `does not meet the image's requires: ${unmet.join('; ')}` : undefined].filter((r): r is string => !!r);
      const skip = reasons.join('; ');
      if (skip && o.terminationLog) {
        try {
          // Written in place: /dev/termination-log is a file the runtime bind-mounts.
          await writeFile(o.terminationLog, skip);
        } catch (e) {
          throw new KbError('INVALID_INPUT', `--termination-log ${o.terminationLog}: cannot write (${errorMessage(e)})`, { cause: e });
        }
      }
      out.result(skip ? `skip: ${skip}` : `proceed: ${wanted.target} is not installed at this digest`, { target: wanted.target, skip: !!skip, reasons });
    });
}
