/**
 * `kbundle trust update` (refresh the trusted root through TUF into the trust cache) and
 * `kbundle trust show` (which trusted root keyless verification uses when none is named).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { fsErrorCode, KbError, UserError } from '../errors.js';
import type { CliIo } from './io.js';

interface CacheFlags {
  root?: string;
  cacheDir?: string;
  json?: boolean;
}

function print(io: CliIo, json: boolean, human: string, data: unknown): void {
  io.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : `${human}\n`);
}

function seconds(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || n > 3600) throw new UserError(`--timeout: "${v}" must be a number of seconds between 1 and 3600`);
  return n * 1000;
}

export function registerTrust(program: Command, io: CliIo): void {
  const trust = program.command('trust').description('the Sigstore trusted root used for keyless verification (TUF-updated cache, else the compiled-in public-good root)');

  trust
    .command('update')
    .description('refresh the trusted root through TUF into the trust cache (<root>/usr/local/var/lib/kbundle/trust, or $KBUNDLE_TRUST_CACHE)')
    .option('--mirror <url>', 'TUF repository (default: Sigstore public good, https://tuf-repo-cdn.sigstore.dev)')
    .option('--tuf-root <file>', 'the TUF root.json to start from (required for a mirror not seen before; replaces the cached one)')
    .option('--root <dir>', 'node root the cache lives under', '/')
    .option('--cache-dir <dir>', 'trust cache directory (overrides --root and $KBUNDLE_TRUST_CACHE)')
    .option('--timeout <seconds>', 'deadline for the whole update', '120')
    .option('--json', 'print a JSON summary')
    .action(async (o: CacheFlags & { mirror?: string; tufRoot?: string; timeout: string }) => {
      const [{ trustCacheDir }, { updateTrustedRoot }] = await Promise.all([import('../trust/store.js'), import('../trust/tuf.js')]);
      let tufRoot: Buffer | undefined;
      if (o.tufRoot) {
        try {
          tufRoot = await readFile(o.tufRoot);
        } catch (e) {
          throw new KbError(fsErrorCode(e), `--tuf-root ${o.tufRoot}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
        }
      }
      const cacheDir = trustCacheDir({ cacheDir: o.cacheDir, root: o.root, env: io.env });
      const r = await updateTrustedRoot({ cacheDir, mirror: o.mirror, tufRoot, timeoutMs: seconds(o.timeout) });
      print(
        io,
        !!o.json,
        [
          `${r.changed ? 'updated' : 'unchanged'}: ${r.trustedRootFile} (sha256:${r.sha256})`,
          `from ${r.mirror}: root v${r.versions.root}, timestamp v${r.versions.timestamp} (expires ${r.timestampExpires}), snapshot v${r.versions.snapshot}, targets v${r.versions.targets}`,
        ].join('\n'),
        r,
      );
    });

  trust
    .command('show')
    .description('print which trusted root keyless verification uses without --trusted-root, and what it trusts')
    .option('--root <dir>', 'node root the cache lives under', '/')
    .option('--cache-dir <dir>', 'trust cache directory (overrides --root and $KBUNDLE_TRUST_CACHE)')
    .option('--json', 'print JSON')
    .action(async (o: CacheFlags) => {
      const { defaultTrustedRoot, trustCacheDir, STATE_FILE } = await import('../trust/store.js');
      const opts = { cacheDir: o.cacheDir, root: o.root, env: io.env };
      const { root, source } = await defaultTrustedRoot(opts);
      let state: unknown;
      if (source !== 'embedded') {
        try {
          state = JSON.parse(await readFile(join(trustCacheDir(opts), STATE_FILE), 'utf8'));
        } catch {
          state = undefined; // the root may have been put there by hand
        }
      }
      const services = {
        certificateAuthorities: root.certificateAuthorities.map((c) => ({ uri: c.uri, validFor: c.validFor })),
        tlogs: root.tlogs.map((t) => ({ baseUrl: t.baseUrl, validFor: t.publicKey?.validFor })),
        ctlogs: root.ctlogs.map((t) => ({ baseUrl: t.baseUrl, validFor: t.publicKey?.validFor })),
        timestampAuthorities: root.timestampAuthorities.map((c) => ({ uri: c.uri, validFor: c.validFor })),
      };
      const line = (what: string, list: { uri?: string; baseUrl?: string }[]) => `  ${what}: ${list.map((x) => x.uri ?? x.baseUrl).join(', ') || '(none)'}`;
      print(
        io,
        !!o.json,
        [
          `trusted root: ${source === 'embedded' ? 'embedded public-good root (no cached update)' : source}`,
          line('certificate authorities', services.certificateAuthorities),
          line('transparency logs', services.tlogs),
          line('CT logs', services.ctlogs),
          line('timestamp authorities', services.timestampAuthorities),
        ].join('\n'),
        { source, state, ...services },
      );
    });
}
