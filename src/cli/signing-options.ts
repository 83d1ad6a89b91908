/**
 * The signing options, in one place: `sign`, `sign-blob`, `attest` and the `--sign` of `push`,
 * `build --push` and `catalog publish` take the same names with the same meaning. A small module:
 * commands that sign only on request must not load the signing code to declare their flags.
 */
import type { Command } from 'commander';
import { DEFAULT_FULCIO_URL, DEFAULT_REKOR_URL } from '../sign/defaults.js';

export function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

/** The signing flags shared by `sign`, `attest`, `sign-blob` and the `--sign` of other commands. */
export interface SigningFlags {
  key?: string;
  identityToken?: string;
  fulcioUrl?: string;
  rekorUrl?: string;
  tlogUpload?: boolean;
  tsaUrl?: string;
  signatureFormat?: string;
  annotation?: string[];
  rekorEntryType?: string;
}

/**
 * The options that pick the signer (a key, or keyless through Fulcio) and where its evidence goes:
 * one list for `sign`, `sign-blob`, `attest` and the `--sign` of other commands. `when` prefixes
 * each help text (e.g. "with --sign: ").
 */
export function addSignerOptions(cmd: Command, when = ''): Command {
  return cmd
    .option('--key <file>', `${when}private key (kbundle or cosign format); password from KBUNDLE_PASSWORD or COSIGN_PASSWORD`)
    .option('--identity-token <token|file>', `${when}keyless: OIDC token for Fulcio (default $SIGSTORE_ID_TOKEN, else the GitHub Actions OIDC token)`)
    .option('--fulcio-url <url>', `${when}keyless: Fulcio URL`, DEFAULT_FULCIO_URL)
    .option('--rekor-url <url>', `${when}Rekor URL (keyless default ${DEFAULT_REKOR_URL}; keyed signatures are uploaded only when given)`)
    .option('--no-tlog-upload', `${when}do not upload to a transparency log`)
    .option('--tsa-url <url>', `${when}RFC 3161 timestamp authority URL`);
}

/** Add `--sign` and the signing flags to another command (push, build --push, catalog publish). */
export function addSigningFlags(cmd: Command): Command {
  return addSignerOptions(cmd.option('--sign', 'sign the pushed digest (both cosign formats by default)'), 'with --sign: ')
    .option('--signature-format <f>', 'with --sign: bundle, legacy or both', 'both')
    .option('-a, --annotation <key=value>', 'with --sign: signed annotation (repeatable)', collect);
}
