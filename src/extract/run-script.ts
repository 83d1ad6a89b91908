import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { fsErrorCode, KbError, UserError } from '../errors.js';

export interface RunScriptResult {
  code: number;
  output: string;
}

const MAX_OUTPUT = 1024 * 1024;

/**
 * Kairos run:// semantics: `/bin/sh run.sh` in the extracted image with the caller's environment
 * plus CONTAINERDIR and BUNDLE_TARGET; kbundle adds KBUNDLE_ROOT when installing under --root.
 * Stdout and stderr are kept (interleaved, capped) for the error message.
 */
export async function runBundleScript(
  dir: string,
  bundleTarget: string,
  root: string | undefined,
  opts: { env?: NodeJS.ProcessEnv; onOutput?: (chunk: string) => void } = {},
): Promise<RunScriptResult> {
  try {
    await access(join(dir, 'run.sh'));
  } catch {
    throw new UserError(`run://${bundleTarget}: the image has no run.sh at its root`, 'run:// needs a run bundle; use container:// to extract a plain image');
  }
  const env: NodeJS.ProcessEnv = { ...(opts.env ?? process.env), CONTAINERDIR: dir, BUNDLE_TARGET: bundleTarget };
  if (root !== undefined && root !== '/') env.KBUNDLE_ROOT = root;
  const child = spawn('/bin/sh', ['run.sh'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (c: Buffer) => {
    const s = c.toString('utf8');
    opts.onOutput?.(s);
    if (output.length < MAX_OUTPUT) output += s;
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const code = await new Promise<number>((resolve, reject) => {
    // A node without /bin/sh (or /dev/null for the closed stdin) cannot run any run:// bundle.
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(new KbError(fsErrorCode(e), `run://${bundleTarget}: cannot start /bin/sh run.sh (${e.code ?? e.message})`, { hint: 'run:// bundles need /bin/sh and /dev/null on the node' })),
    );
    child.on('close', (c, signal) => resolve(c ?? (signal ? 128 : 1)));
  });
  return { code, output };
}
