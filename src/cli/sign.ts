/**
 * `kbundle key generate`, `kbundle sign`, `kbundle verify`: parse flags, call src/sign or
 * src/verify, print (human text or --json).
 */
import { Writable } from 'node:stream';
import type { Command } from 'commander';
import { KbError, UserError } from '../errors.js';
import type { Descriptor } from '../oci/types.js';
import type { RegistryClient } from '../registry/client.js';
import type { SignatureFormat } from '../sign/sign.js';
import type { Target } from '../oci/target.js';
import { openSource } from '../store/open.js';
import { capabilitiesOf, isRegistryLocation, parseImageArgument, transportOf, type ImageLocation } from '../store/transport.js';
import type { Matcher } from '../verify/identity.js';
import type { SignerRequirement, VerificationPolicy } from '../verify/requirements.js';
import type { VerifiedSigner } from '../verify/verify.js';
import type { CliIo } from './io.js';
import { makeClient, registryOptions, type RegistryFlags } from './registry-flags.js';

// Modules are imported where they are needed: a node running `kbundle verify` should load the
// verifier, not the signing clients (make-fetch-happen & co.), the YAML parser or the registry
// client when it verifies a local layout.

import { DEFAULT_FULCIO_URL, DEFAULT_REKOR_URL } from '../sign/defaults.js';
import { addSignerOptions, collect, type SigningFlags } from './signing-options.js';
export { DEFAULT_FULCIO_URL, DEFAULT_REKOR_URL };
export { collect } from './signing-options.js';

/** Result printing as the other commands do it (cli/output.ts), without its progress-bar dependency. */
function printResult(io: CliIo, json: boolean, human: string, data: unknown): void {
  io.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : `${human}\n`);
}

// ---------------------------------------------------------------------------------------------
// Passwords
// ---------------------------------------------------------------------------------------------

async function promptHidden(io: CliIo, question: string): Promise<string> {
  const muted = new Writable({
    write(_chunk, _enc, cb) {
      cb();
    },
  });
  io.stderr.write(question);
  const { createInterface } = await import('node:readline');
  const rl = createInterface({ input: io.stdin, output: muted, terminal: true });
  try {
    return await new Promise<string>((res) => rl.question('', res));
  } finally {
    rl.close();
    io.stderr.write('\n');
  }
}

/** KBUNDLE_PASSWORD (may be empty), else COSIGN_PASSWORD, else a prompt on a terminal. */
export async function keyPassword(io: CliIo, confirm: boolean): Promise<string> {
  if (io.env.KBUNDLE_PASSWORD !== undefined) return io.env.KBUNDLE_PASSWORD;
  if (io.env.COSIGN_PASSWORD !== undefined) return io.env.COSIGN_PASSWORD;
  if (!io.stdin.isTTY) throw new UserError('no password for the private key: set KBUNDLE_PASSWORD (an empty value is allowed)', 'or run on a terminal to be prompted');
  const pw = await promptHidden(io, 'Enter password for private key: ');
  if (confirm && (await promptHidden(io, 'Enter password for private key again: ')) !== pw) throw new UserError('the passwords do not match');
  return pw;
}

// ---------------------------------------------------------------------------------------------
// Registry flags and image arguments
// ---------------------------------------------------------------------------------------------

export interface OpenedForSigning {
  target: Target;
  reference: string;
  /** `registry/repository` (registries), `oci:<abs dir>` (layouts): what trust policies match. */
  image: string;
  /** `registry/repository` for registries (what legacy payloads name). */
  repository?: string;
  dockerReference?: string;
  display: string;
}

/** Signatures are read and written where the image lies: a registry or an OCI layout, not an archive. */
function signableLocation(arg: string): ImageLocation {
  const loc = parseImageArgument(arg, 'image');
  const caps = capabilitiesOf(loc);
  if (!caps.inPlace || !caps.signatures) {
    throw new UserError(
      `${arg}: signatures live in a registry or an OCI layout directory, not in ${loc.transport} files`,
      'copy it first: kbundle copy <archive> oci:<dir>, then sign oci:<dir>:<tag>',
    );
  }
  return loc;
}

/** `oci:<dir>[:tag]`, `docker://host/repo[:tag|@digest]` or a bare `host/repo[:tag|@digest]`. */
export async function openImage(arg: string, client: RegistryClient | undefined, access: 'pull' | 'push'): Promise<OpenedForSigning> {
  const loc = signableLocation(arg);
  const img = await openSource(loc, { client, registry: { access } });
  const image = transportOf(loc).identity(loc);
  if (img.registryRef) {
    const { dockerReferenceOf } = await import('../attach/formats.js');
    const ref = img.registryRef;
    return { target: img.target, reference: img.reference, image, repository: image, dockerReference: dockerReferenceOf(ref.registry, ref.repository), display: arg.replace(/^docker:\/\//, '') };
  }
  return { target: img.target, reference: img.reference, image, display: img.display };
}

/** What trust policies match for an image argument, without opening it. */
export function imageName(arg: string): string {
  const loc = signableLocation(arg);
  return transportOf(loc).identity(loc);
}

function parseAnnotations(list: string[] | undefined, flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of list ?? []) {
    const i = a.indexOf('=');
    if (i <= 0) throw new UserError(`${flag}: "${a}" must be key=value`);
    out[a.slice(0, i)] = a.slice(i + 1);
  }
  return out;
}

export function parseFormats(v: string): SignatureFormat[] {
  if (v === 'both') return ['bundle', 'legacy'];
  if (v === 'bundle' || v === 'legacy') return [v];
  throw new UserError(`--format: "${v}" must be bundle, legacy or both`);
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

interface SignFlags extends RegistryFlags, SigningFlags {
  fulcioUrl: string;
  format: string;
  recursive?: boolean;
  annotation?: string[];
  identity?: string;
  rekorEntryType?: string;
  json?: boolean;
}

export interface VerifyFlags extends RegistryFlags {
  key?: string[];
  certificateIdentity?: string;
  certificateIdentityRegexp?: string;
  certificateOidcIssuer?: string;
  certificateOidcIssuerRegexp?: string;
  trustedRoot?: string;
  policy?: string;
  offline?: boolean;
  insecureIgnoreTlog?: boolean;
  requireTlog?: boolean;
  insecureIgnoreSct?: boolean;
  annotation?: string[];
  format: string;
  json?: boolean;
}

export async function policyFromFlags(o: VerifyFlags, image: string, env: NodeJS.ProcessEnv): Promise<VerificationPolicy> {
  const annotations = parseAnnotations(o.annotation, '--annotation');
  const formats = parseFormats(o.format);
  const identityGiven = o.certificateIdentity || o.certificateIdentityRegexp || o.certificateOidcIssuer || o.certificateOidcIssuerRegexp;
  if (o.policy) {
    if (o.key?.length || identityGiven) throw new UserError('--policy replaces --key and --certificate-* flags; give one or the other');
    const { loadPolicy } = await import('../verify/policy.js');
    const loaded = await loadPolicy(o.policy);
    const p = await loaded.policyFor(image);
    if (o.annotation?.length) p.annotations = { ...p.annotations, ...annotations };
    if (o.format !== 'both') p.formats = formats;
    return p;
  }
  const [{ loadPublicKeys }, { exactMatcher, regexpMatcher }] = await Promise.all([import('../sign/keys.js'), import('../verify/identity.js')]);
  const root = o.trustedRoot ? await (await import('../verify/trust.js')).loadTrustedRoot(o.trustedRoot) : undefined;
  const signers: SignerRequirement[] = [];
  for (const k of o.key ?? []) {
    if (o.requireTlog && !root) throw new UserError('--require-tlog needs --trusted-root (the transparency log key lives there)');
    signers.push({ kind: 'key', name: k, keys: await loadPublicKeys(k), tlog: !!o.requireTlog, trustedRoot: root });
  }
  if (identityGiven) {
    if (!!o.certificateIdentity === !!o.certificateIdentityRegexp) throw new UserError('keyless verification needs exactly one of --certificate-identity or --certificate-identity-regexp');
    if (!!o.certificateOidcIssuer === !!o.certificateOidcIssuerRegexp) throw new UserError('keyless verification needs exactly one of --certificate-oidc-issuer or --certificate-oidc-issuer-regexp');
    // Without --trusted-root: the one `kbundle trust update` cached, else the compiled-in public-good root.
    const keylessRoot = root ?? (await (await import('../trust/store.js')).defaultTrustedRoot({ env })).root;
    const identity: Matcher = o.certificateIdentity ? exactMatcher(o.certificateIdentity, '--certificate-identity') : regexpMatcher(o.certificateIdentityRegexp!, '--certificate-identity-regexp');
    const issuer: Matcher = o.certificateOidcIssuer
      ? exactMatcher(o.certificateOidcIssuer, '--certificate-oidc-issuer')
      : regexpMatcher(o.certificateOidcIssuerRegexp!, '--certificate-oidc-issuer-regexp');
    signers.push({
      kind: 'keyless',
      name: o.certificateIdentity ?? `/${o.certificateIdentityRegexp}/`,
      identity,
      issuer,
      trustedRoot: keylessRoot,
      tlog: !o.insecureIgnoreTlog,
      ctlog: !o.insecureIgnoreSct,
    });
  }
  if (signers.length === 0) throw new UserError('verify: say whom to trust: --key <pub>, --certificate-identity … --certificate-oidc-issuer … --trusted-root …, or --policy <file>');
  return { signers, require: 'any', annotations, formats };
}

export function describeSigner(s: VerifiedSigner): string {
  const who = s.kind === 'key' ? `key sha256:${s.keyFingerprint}` : `${s.identity} (issuer ${s.issuer})`;
  const ev = [s.tlog.length ? `tlog index ${s.tlog.map((t) => t.logIndex).join(',')}` : '', s.timestamps.length ? `signed ${s.timestamps[0]}` : ''].filter(Boolean).join(', ');
  return `  ${s.format} ${s.location}: ${who}${ev ? ` — ${ev}` : ''}`;
}

/**
 * The keyless identity token, found the way cosign finds it (src/sign/oidc.ts), before anything is
 * pushed or signed. A GitHub Actions token is fetched now (a missing `id-token: write` fails
 * early) and again when Fulcio is called, so a long push does not outlive it.
 */
export async function keylessToken(flag: string | undefined, env: NodeJS.ProcessEnv): Promise<string | (() => Promise<string>)> {
  const { githubActionsToken, resolveIdentityToken } = await import('../sign/oidc.js');
  const found = await resolveIdentityToken(flag, env);
  if (!found) {
    throw new UserError(
      'give --key <file>, or an identity token for keyless signing (--identity-token <jwt|file>, SIGSTORE_ID_TOKEN, or the GitHub Actions OIDC token)',
      'in GitHub Actions, grant the job `permissions: id-token: write`',
    );
  }
  if (found.source !== 'GitHub Actions') return found.token;
  let first: string | undefined = found.token;
  return async () => {
    const t = first ?? (await githubActionsToken(env));
    first = undefined;
    return t;
  };
}

// ---------------------------------------------------------------------------------------------
// Signing from other commands (`kbundle push --sign`, `kbundle build … --push --sign`)
// ---------------------------------------------------------------------------------------------

export interface PreparedSigning {
  /** Sign `root` (a digest that was just pushed) in `target`. */
  sign(target: Target, root: Descriptor, opts: { dockerReference?: string; recursive?: boolean }): Promise<import('../sign/sign.js').SignResult>;
  /** The same key or identity, logs and timestamps, for other signed things (attestations). */
  options: Pick<import('../sign/sign.js').SignOptions, 'key' | 'keyless' | 'rekorURL' | 'rekorEntryType' | 'tsaURL'>;
  formats: SignatureFormat[];
}

/**
 * Check the flags and unlock the key *before* anything is pushed (a wrong password must not
 * leave an unsigned image behind); returns the signer to call after the push.
 */
export async function prepareSigning(o: SigningFlags, io: CliIo): Promise<PreparedSigning> {
  const formats = parseFormats(o.signatureFormat ?? 'both');
  if (o.key && o.identityToken) throw new UserError('give either --key or --identity-token, not both');
  const token = o.key ? undefined : await keylessToken(o.identityToken, io.env);
  const entryType = o.rekorEntryType ?? 'dsse';
  if (entryType !== 'dsse' && entryType !== 'intoto') throw new UserError('--rekor-entry-type must be dsse or intoto');
  const annotations = parseAnnotations(o.annotation, '--annotation');
  const [{ loadPrivateKey }, { signImage }] = await Promise.all([import('../sign/keys.js'), import('../sign/sign.js')]);
  const key = o.key ? await loadPrivateKey(o.key, () => keyPassword(io, false)) : undefined;
  const upload = o.tlogUpload !== false;
  const rekorURL = upload ? (o.rekorUrl ?? (o.key ? undefined : DEFAULT_REKOR_URL)) : undefined;
  const keyless = token ? { identityToken: token, fulcioURL: o.fulcioUrl ?? DEFAULT_FULCIO_URL } : undefined;
  return {
    options: { key, keyless, rekorURL, rekorEntryType: entryType, tsaURL: o.tsaUrl },
    formats,
    sign: (target, root, extra) =>
      signImage(target, root, {
        key,
        keyless,
        formats,
        rekorURL,
        rekorEntryType: entryType,
        tsaURL: o.tsaUrl,
        annotations,
        dockerReference: extra.dockerReference,
        recursive: extra.recursive,
      }),
  };
}

/** Human lines for a sign result (one per signature written). */
export function describeSigned(result: import('../sign/sign.js').SignResult): string[] {
  const lines: string[] = [];
  for (const m of [result.root, ...result.children])
    for (const s of m.signatures) lines.push(`  ${m.digest.slice(0, 19)}… ${s.format}: ${s.location}${s.added ? '' : ' (already signed with this key)'}`);
  return lines;
}

export function registerSigning(program: Command, io: CliIo): void {
  const key = program.command('key').description('manage signing keys');
  key
    .command('generate')
    .description('create an ECDSA P-256 key pair: <prefix>.key (encrypted with KBUNDLE_PASSWORD, cosign format) and <prefix>.pub')
    .option('--out <prefix>', 'file name prefix', 'kbundle')
    .option('--force', 'replace existing files')
    .option('--json', 'print a JSON summary')
    .action(async (o: { out: string; force?: boolean; json?: boolean }) => {
      const { writeKeyPair } = await import('../sign/keys.js');
      const password = await keyPassword(io, true);
      const r = await writeKeyPair(o.out, password, { force: o.force });
      printResult(io, !!o.json, `wrote ${r.keyFile} (private, encrypted) and ${r.pubFile}\nkey hint: ${r.hint}`, { privateKey: r.keyFile, publicKey: r.pubFile, hint: r.hint });
    });

  registryOptions(
    addSignerOptions(
      program
        .command('sign')
        .description('sign an image by digest (a tag is resolved once) and store the signature as cosign does')
        .argument('<image>', 'docker://host/repo:tag | host/repo@sha256:… | oci:<dir>[:tag]'),
    )
      .option('--format <f>', 'bundle (Sigstore bundle referrer), legacy (sha256-<hex>.sig) or both', 'both')
      .option('--recursive', 'also sign every manifest of a multi-platform index')
      .option('-a, --annotation <key=value>', 'signed annotation (repeatable)', collect)
      .option('--identity <repository>', 'docker-reference written in legacy payloads (default: the repository)')
      .option('--rekor-entry-type <type>', 'Rekor entry type for bundles: dsse or intoto', 'dsse')
      .option('--json', 'print a JSON summary'),
    { json: false },
  ).action(async (arg: string, o: SignFlags) => {
    const prepared = await prepareSigning({ ...o, signatureFormat: o.format }, io);
    const loc = parseImageArgument(arg, 'image');
    const client = isRegistryLocation(loc) ? await makeClient(o, io) : undefined;
    try {
      const img = await openImage(arg, client, 'push');
      const root: Descriptor = await img.target.resolve(img.reference);
      const result = await prepared.sign(img.target, root, { dockerReference: o.identity ?? img.dockerReference, recursive: o.recursive });
      const all = [result.root, ...result.children];
      printResult(io, !!o.json, [`signed ${img.display} (${result.signer})`, `digest: ${result.root.digest}`, ...describeSigned(result)].join('\n'), {
        reference: img.display,
        digest: result.root.digest,
        signer: result.signer,
        manifests: all,
      });
    } finally {
      await client?.close();
    }
  });

  registryOptions(
    program
      .command('verify')
      .description('verify an image signature (Sigstore bundle referrers and sha256-<hex>.sig) against keys, identities or a trust policy')
      .argument('<image>', 'docker://host/repo:tag | host/repo@sha256:… | oci:<dir>[:tag]')
      .option('--key <file>', 'trusted public key (repeatable: any of them)', collect)
      .option('--certificate-identity <san>', 'keyless: exact certificate identity (email or URI)')
      .option('--certificate-identity-regexp <re>', 'keyless: certificate identity, anchored regular expression')
      .option('--certificate-oidc-issuer <url>', 'keyless: exact OIDC issuer')
      .option('--certificate-oidc-issuer-regexp <re>', 'keyless: OIDC issuer, anchored regular expression')
      .option('--trusted-root <file>', 'trusted_root.json (Fulcio CAs, Rekor, CT logs, TSAs); default: the one `kbundle trust update` cached, else the embedded public-good root')
      .option('--policy <file>', 'trust policy: containers-policy.json(5) or kbundle YAML (see signing/policies/)')
      .option('--offline', 'use only carried trust material (kbundle never fetches any; accepted for cosign parity)')
      .option('--insecure-ignore-tlog', 'keyless: accept an RFC 3161 timestamp instead of a transparency-log entry')
      .option('--insecure-ignore-sct', 'keyless: do not require an SCT in the certificate')
      .option('--require-tlog', 'keyed: require a verified transparency-log entry (needs --trusted-root)')
      .option('--annotation <key=value>', 'require this signed annotation (repeatable)', collect)
      .option('--format <f>', 'bundle, legacy or both', 'both')
      .option('--json', 'print the verified signers as JSON'),
    { json: false },
  ).action(async (arg: string, o: VerifyFlags) => {
    const loc = parseImageArgument(arg, 'image');
    const verifier = import('../verify/verify.js'); // loads while the registry answers
    verifier.catch(() => undefined);
    // Usage errors first: whom to trust is settled before anything is opened.
    if (o.policy) {
      const { loadTrustPolicy } = await import('../policy/index.js');
      const tp = loadTrustPolicy(o.policy);
      if (tp.format === 'containers-policy') {
        const identityGiven = o.certificateIdentity || o.certificateIdentityRegexp || o.certificateOidcIssuer || o.certificateOidcIssuerRegexp;
        if (o.key?.length || identityGiven || o.annotation?.length || o.format !== 'both')
          throw new UserError('--policy replaces --key, --certificate-*, --annotation and --format; give one or the other');
        const { checkAgainstPolicy } = await import('./policy.js');
        return checkAgainstPolicy(arg, tp, o, io);
      }
    }
    const policy = await policyFromFlags(o, imageName(arg), io.env);
    const client = isRegistryLocation(loc) ? await makeClient(o, io) : undefined;
    let digest: string | undefined;
    try {
      const img = await openImage(arg, client, 'pull');
      const { verifyReference } = await verifier;
      const { desc, signers } = await verifyReference(img.target, img.reference, policy, {
        repository: img.repository,
        display: (d) => `${img.display}${img.display.includes('@') ? '' : `@${d}`}`,
        onResolved: (d) => (digest = d.digest),
      });
      digest = desc.digest;
      printResult(io, !!o.json, [`verified ${img.display}@${desc.digest}: ${signers.length} signature(s) satisfy the policy`, ...signers.map(describeSigner)].join('\n'), {
        verified: true,
        reference: img.display,
        digest: desc.digest,
        signers,
      });
    } catch (e) {
      if (o.json && e instanceof KbError) io.stdout.write(`${JSON.stringify({ verified: false, reference: arg, digest, error: e.message }, null, 2)}\n`);
      throw e;
    } finally {
      await client?.close();
    }
  });
}
