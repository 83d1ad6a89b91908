/**
 * `kbundle sign-blob` and `kbundle verify-blob`, with cosign's flag names: parse, call src/blob,
 * print (human text or --json).
 */
import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Command } from 'commander';
import { fsErrorCode, KbError, UserError } from '../errors.js';
import type { CliIo } from './io.js';
import { addSignerOptions, type SigningFlags } from './signing-options.js';
import { DEFAULT_REKOR_URL } from '../sign/defaults.js';

/** sign-blob and verify-blob hold the file in memory (@sigstore/sign and @sigstore/verify take it as one buffer). */
export const MAX_BLOB_BYTES = 1 << 30;
const DIGEST_ARG = /^sha256:[0-9a-f]{64}$/;

function print(io: CliIo, json: boolean, human: string, data: unknown): void {
  io.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : `${human}\n`);
}

async function readCapped(path: string, what: string, limit: number): Promise<Buffer> {
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new UserError(`${what} ${path}: not a regular file`);
    if (st.size > limit)
      throw new KbError('UNSUPPORTED', `${what} ${path}: ${st.size} bytes, over the ${limit}-byte limit`, { hint: 'kbundle reads blobs into memory; sign a digest-bearing manifest of it instead' });
    return await readFile(path);
  } catch (e) {
    if (e instanceof KbError) throw e;
    throw new KbError(fsErrorCode(e), `${what} ${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
}

async function readStdin(io: CliIo, limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of io.stdin) {
    const b = typeof c === 'string' ? Buffer.from(c) : (c as Buffer);
    n += b.length;
    if (n > limit) throw new KbError('UNSUPPORTED', `standard input: over the ${limit}-byte limit`);
    parts.push(b);
  }
  return Buffer.concat(parts);
}

interface SignBlobFlags extends SigningFlags {
  fulcioUrl: string;
  bundle: string;
  timestampServerUrl?: string;
  dsse?: boolean;
  rekorEntryType: string;
  outputSignature?: string;
  outputCertificate?: string;
  json?: boolean;
}

interface VerifyBlobFlags {
  bundle: string;
  key?: string;
  certificateIdentity?: string;
  certificateIdentityRegexp?: string;
  certificateOidcIssuer?: string;
  certificateOidcIssuerRegexp?: string;
  trustedRoot?: string;
  insecureIgnoreTlog?: boolean;
  insecureIgnoreSct?: boolean;
  requireTlog?: boolean;
  predicateType?: string;
  root?: string;
  json?: boolean;
}

export function registerBlob(program: Command, io: CliIo): void {
  addSignerOptions(
    program
      .command('sign-blob')
      .description('sign a file and write a Sigstore bundle (v0.3; a message signature, or with --dsse an in-toto statement) as cosign sign-blob does')
      .argument('<file>', 'the file to sign (- for standard input)')
      .requiredOption('--bundle <file>', 'where to write the Sigstore bundle'),
  )
    .option('--timestamp-server-url <url>', 'cosign\u2019s name for --tsa-url')
    .option('--dsse', 'sign an in-toto statement naming the file\u2019s sha256 (DSSE envelope) instead of the file itself')
    .option('--rekor-entry-type <type>', 'Rekor entry type with --dsse: dsse or intoto', 'dsse')
    .option('--output-signature <file>', 'also write the signature, base64')
    .option('--output-certificate <file>', 'keyless: also write the Fulcio certificate, PEM')
    .option('-y, --yes', 'accepted for cosign parity (kbundle never prompts)')
    .option('--json', 'print a JSON summary')
    .action(async (file: string, o: SignBlobFlags) => {
      if (o.key && o.identityToken) throw new UserError('give either --key or --identity-token, not both');
      if (o.tsaUrl && o.timestampServerUrl && o.tsaUrl !== o.timestampServerUrl) throw new UserError('--tsa-url and --timestamp-server-url name different servers');
      if (o.rekorEntryType !== 'dsse' && o.rekorEntryType !== 'intoto') throw new UserError('--rekor-entry-type must be dsse or intoto');
      // Everything that can fail without the network is settled before a signature is made.
      const data = file === '-' ? await readStdin(io, MAX_BLOB_BYTES) : await readCapped(file, 'sign-blob', MAX_BLOB_BYTES);
      const [{ signBlob }, { loadPrivateKey }, { writeFileAtomic }] = await Promise.all([import('../blob/sign.js'), import('../sign/keys.js'), import('../util/atomic-write.js')]);
      const { keyPassword, keylessToken } = await import('./sign.js');
      const key = o.key ? await loadPrivateKey(o.key, () => keyPassword(io, false)) : undefined;
      const token = key ? undefined : await keylessToken(o.identityToken, io.env);
      const upload = o.tlogUpload !== false;
      const r = await signBlob(data, {
        key,
        keyless: token ? { identityToken: token, fulcioURL: o.fulcioUrl } : undefined,
        dsse: o.dsse,
        subjectName: file === '-' ? undefined : basename(file),
        rekorURL: upload ? (o.rekorUrl ?? (key ? undefined : DEFAULT_REKOR_URL)) : undefined,
        rekorEntryType: o.rekorEntryType,
        tsaURL: o.tsaUrl ?? o.timestampServerUrl,
      });
      await writeFileAtomic(o.bundle, r.bundle, { mode: 0o644 });
      if (o.outputSignature) await writeFileAtomic(o.outputSignature, r.signature.toString('base64'), { mode: 0o644 });
      if (o.outputCertificate) {
        if (!r.certificate) throw new UserError('--output-certificate: a keyed signature has no certificate');
        await writeFileAtomic(o.outputCertificate, r.certificate, { mode: 0o644 });
      }
      const evidence = [r.tlog.length ? `tlog index ${r.tlog.map((t) => t.logIndex).join(',')}` : '', r.timestamps ? `${r.timestamps} timestamp(s)` : ''].filter(Boolean).join(', ');
      print(io, !!o.json, `signed ${file} (${r.digest}) ${key ? `with key ${r.hint}` : 'keyless'}${evidence ? `, ${evidence}` : ''}\nwrote ${o.bundle}`, {
        file,
        digest: r.digest,
        bundle: o.bundle,
        signer: key ? { kind: 'key', hint: r.hint } : { kind: 'keyless' },
        tlog: r.tlog,
        timestamps: r.timestamps,
      });
    });

  program
    .command('verify-blob')
    .description('verify a Sigstore bundle (v0.1, v0.2, v0.3; message signature or DSSE) for a file or a sha256 digest, as cosign verify-blob does')
    .argument('<file|sha256:hex>', 'the file, or its sha256 (DSSE bundles only)')
    .requiredOption('--bundle <file>', 'the Sigstore bundle')
    .option('--key <file>', 'trusted public key')
    .option('--certificate-identity <san>', 'keyless: exact certificate identity (email or URI)')
    .option('--certificate-identity-regexp <re>', 'keyless: certificate identity, anchored regular expression')
    .option('--certificate-oidc-issuer <url>', 'keyless: exact OIDC issuer')
    .option('--certificate-oidc-issuer-regexp <re>', 'keyless: OIDC issuer, anchored regular expression')
    .option('--trusted-root <file>', 'trusted_root.json; default: the one `kbundle trust update` cached, else the embedded public-good root')
    .option('--insecure-ignore-tlog', 'keyless: accept an RFC 3161 timestamp instead of a transparency-log entry; keyed: do not check log entries')
    .option('--insecure-ignore-sct', 'keyless: do not require an SCT in the certificate')
    .option('--require-tlog', 'keyed: require a verified transparency-log entry')
    .option('--predicate-type <uri>', 'DSSE in-toto bundles: require this predicate type')
    .option('--root <dir>', 'node root whose trust cache supplies the default trusted root', '/')
    .option('--offline', 'accepted for cosign parity (verification never uses the network)')
    .option('--json', 'print the result as JSON')
    .action(async (arg: string, o: VerifyBlobFlags) => {
      const identityGiven = o.certificateIdentity || o.certificateIdentityRegexp || o.certificateOidcIssuer || o.certificateOidcIssuerRegexp;
      if (!!o.key === !!identityGiven) throw new UserError('verify-blob: give --key <pub>, or --certificate-identity(-regexp) with --certificate-oidc-issuer(-regexp)');
      if (o.requireTlog && o.insecureIgnoreTlog) throw new UserError('--require-tlog and --insecure-ignore-tlog contradict each other');
      const [{ verifyBlob, BlobVerificationError }, { loadTrustedRoot }, { defaultTrustedRoot }] = await Promise.all([
        import('../blob/verify.js'),
        import('../verify/trust.js'),
        import('../trust/store.js'),
      ]);
      const trustedRoot = o.trustedRoot ? await loadTrustedRoot(o.trustedRoot) : (await defaultTrustedRoot({ root: o.root, env: io.env })).root;
      let policy: import('../blob/verify.js').BlobPolicy;
      if (o.key) {
        const { loadPublicKeys } = await import('../sign/keys.js');
        policy = { kind: 'key', name: o.key, keys: await loadPublicKeys(o.key), trustedRoot, tlog: o.insecureIgnoreTlog ? 'ignore' : o.requireTlog ? 'require' : 'if-present' };
      } else {
        if (!!o.certificateIdentity === !!o.certificateIdentityRegexp) throw new UserError('keyless verification needs exactly one of --certificate-identity or --certificate-identity-regexp');
        if (!!o.certificateOidcIssuer === !!o.certificateOidcIssuerRegexp)
          throw new UserError('keyless verification needs exactly one of --certificate-oidc-issuer or --certificate-oidc-issuer-regexp');
        if (o.requireTlog) throw new UserError('--require-tlog is for --key; keyless verification requires a log entry unless --insecure-ignore-tlog');
        const { exactMatcher, regexpMatcher } = await import('../verify/identity.js');
        policy = {
          kind: 'keyless',
          identity: o.certificateIdentity ? exactMatcher(o.certificateIdentity, '--certificate-identity') : regexpMatcher(o.certificateIdentityRegexp!, '--certificate-identity-regexp'),
          issuer: o.certificateOidcIssuer ? exactMatcher(o.certificateOidcIssuer, '--certificate-oidc-issuer') : regexpMatcher(o.certificateOidcIssuerRegexp!, '--certificate-oidc-issuer-regexp'),
          trustedRoot,
          tlog: !o.insecureIgnoreTlog,
          ctlog: !o.insecureIgnoreSct,
        };
      }
      const bundle = await readCapped(o.bundle, '--bundle', 4 << 20);
      const artifact = DIGEST_ARG.test(arg) ? ({ kind: 'digest', digest: arg } as const) : ({ kind: 'file', bytes: await readCapped(arg, 'verify-blob', MAX_BLOB_BYTES) } as const);
      try {
        const r = await verifyBlob(artifact, bundle, policy, { predicateType: o.predicateType });
        const who = r.kind === 'key' ? `key sha256:${r.keyFingerprint}` : `${r.identity} (issuer ${r.issuer})`;
        const ev = [r.tlog.length ? `tlog index ${r.tlog.map((t) => t.logIndex).join(',')}` : '', r.timestamps.length ? `signed ${r.timestamps[0]}` : ''].filter(Boolean).join(', ');
        print(io, !!o.json, `Verified OK: ${arg}${artifact.kind === 'file' ? ` (${r.digest})` : ''} signed by ${who} — bundle v${r.bundleVersion} ${r.content}${ev ? `, ${ev}` : ''}`, {
          file: arg,
          bundle: o.bundle,
          ...r,
        });
      } catch (e) {
        if (e instanceof BlobVerificationError) {
          if (o.json) print(io, true, '', { verified: false, file: arg, bundle: o.bundle, check: e.check, error: e.reason });
          throw new KbError(e.code, `verify-blob ${arg} with ${o.bundle}: ${e.message}`, { hint: e.hint, cause: e });
        }
        throw e;
      }
    });
}
