/**
 * `kbundle attest` and `kbundle verify-attestation` (cosign's flag names): parse, call
 * src/attest and src/verify/attestations.ts, print (text or --json).
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { fsErrorCode, KbError, UserError } from '../errors.js';
import type { SignatureFormat } from '../sign/sign.js';
import { isRegistryLocation, parseImageArgument } from '../store/transport.js';
import type { AttestationRequirement, SignerRequirement } from '../verify/requirements.js';
import type { VerifiedAttestation } from '../verify/attestations.js';
import type { CliIo } from './io.js';
import { makeClient, registryOptions, type RegistryFlags } from './registry-flags.js';
import { addSignerOptions, type SigningFlags } from './signing-options.js';
import { collect, DEFAULT_REKOR_URL, describeSigner, imageName, keylessToken, keyPassword, openImage, parseFormats, policyFromFlags, type VerifyFlags } from './sign.js';

function print(io: CliIo, json: boolean, human: string, data: unknown): void {
  io.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : `${human}\n`);
}

async function readPredicate(path: string, io: CliIo): Promise<string> {
  if (path === '-') {
    const chunks: Buffer[] = [];
    for await (const c of io.stdin as AsyncIterable<Buffer | string>) chunks.push(Buffer.from(c));
    return Buffer.concat(chunks).toString('utf8');
  }
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new KbError(fsErrorCode(e), `${path}: cannot read the predicate (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
}

interface AttestFlags extends RegistryFlags, SigningFlags {
  fulcioUrl: string;
  predicate?: string;
  type: string;
  rekorEntryType: string;
  format: string;
  newBundleFormat?: boolean;
  replace?: boolean;
  json?: boolean;
}

interface VerifyAttestationFlags extends VerifyFlags {
  type: string;
  builderId?: string;
}

/** Whom to trust for `--type`: the policy entry's attestation requirement of that type, or its signers, or the flags. */
async function requirementFromFlags(o: VerifyAttestationFlags, arg: string, predicateType: string, env: NodeJS.ProcessEnv): Promise<AttestationRequirement> {
  const image = imageName(arg);
  const formats = parseFormats(o.format);
  const withFlags = (r: AttestationRequirement): AttestationRequirement => ({
    ...r,
    ...(o.builderId !== undefined ? { builderId: o.builderId } : {}),
    ...(o.format !== 'both' ? { formats } : {}),
  });
  if (o.policy) {
    const identityGiven = o.certificateIdentity || o.certificateIdentityRegexp || o.certificateOidcIssuer || o.certificateOidcIssuerRegexp;
    if (o.key?.length || identityGiven) throw new UserError('--policy replaces --key and --certificate-* flags; give one or the other');
    const { loadTrustPolicy, decide } = await import('../policy/index.js');
    const tp = loadTrustPolicy(o.policy);
    if (tp.format === 'kbundle-yaml') {
      const p = await tp.policy.policyFor(image);
      const required = p.attestations?.find((a) => a.predicateType === predicateType);
      return withFlags(required ?? { predicateType, signers: p.signers });
    }
    const subject = /^oci:/.test(image) ? { kind: 'local' as const, name: image } : { kind: 'registry' as const, reference: arg.replace(/^docker:\/\//, '') };
    const d = await decide(tp, subject);
    if (d.verdict === 'reject') throw new KbError('REFUSED', `${image}: refused by ${tp.path}: ${d.scope} is "reject"`);
    const signers: SignerRequirement[] = d.checks.flatMap((c) => c.signers);
    if (signers.length === 0) throw new UserError(`${tp.path}: ${d.scope} names no signers (insecureAcceptAnything); attestations need someone to trust`);
    return withFlags({ predicateType, signers });
  }
  const p = await policyFromFlags({ ...o, annotation: undefined }, image, env);
  return withFlags({ predicateType, signers: p.signers });
}

/** The signer line of `verify`, plus the statement's subject name when it has one. */
function describeAttestation(a: VerifiedAttestation): string {
  const subject = (a.statement.subject as { name?: unknown }[] | undefined)?.[0]?.name;
  return `${describeSigner(a)}${typeof subject === 'string' && subject ? ` (subject ${subject})` : ''}`;
}

export function registerAttest(program: Command, io: CliIo): void {
  registryOptions(
    addSignerOptions(
      program
        .command('attest')
        .description('sign an in-toto statement about an image (SBOM, provenance, scan…) and attach it as cosign does: sha256-<hex>.att and a Sigstore bundle referrer')
        .argument('<image>', 'docker://host/repo:tag | host/repo@sha256:… | oci:<dir>[:tag]')
        .option('--predicate <file>', 'the predicate: a JSON file, or - for standard input')
        .option('--type <type>', 'slsaprovenance|slsaprovenance02|slsaprovenance1|spdxjson|cyclonedx|vuln|openvex|custom, or a predicate type URI', 'custom'),
    )
      .option('--rekor-entry-type <type>', 'dsse or intoto', 'dsse')
      .option('--format <f>', 'where to store it: bundle (referrer), legacy (sha256-<hex>.att) or both', 'both')
      .option('--new-bundle-format', "cosign's flag: store only the Sigstore bundle referrer (same as --format bundle)")
      .option('--replace', 'legacy: replace the .att layers of the same predicate type')
      .option('--json', 'print a JSON summary'),
    { json: false },
  ).action(async (arg: string, o: AttestFlags) => {
    // Everything that can fail on bad input happens before anything is opened or pushed.
    if (!o.predicate) throw new UserError('attest: --predicate <file> is required', 'the predicate is the JSON document to attest: an SBOM, a SLSA provenance, a scan result');
    const formats: SignatureFormat[] = o.newBundleFormat ? ['bundle'] : parseFormats(o.format);
    if (o.newBundleFormat && o.format !== 'both' && o.format !== 'bundle') throw new UserError('--new-bundle-format stores the bundle referrer only; it contradicts --format legacy');
    if (o.rekorEntryType !== 'dsse' && o.rekorEntryType !== 'intoto') throw new UserError('--rekor-entry-type must be dsse or intoto');
    if (o.key && o.identityToken) throw new UserError('give either --key or --identity-token, not both');
    const { predicateFromFile } = await import('../attest/predicate.js');
    const predicate = predicateFromFile(await readPredicate(o.predicate, io), o.type, o.predicate === '-' ? 'standard input' : o.predicate, new Date());
    const token = o.key ? undefined : await keylessToken(o.identityToken, io.env);
    const { loadPrivateKey } = await import('../sign/keys.js');
    const key = o.key ? await loadPrivateKey(o.key, () => keyPassword(io, false)) : undefined;
    const loc = parseImageArgument(arg, 'image');
    const client = isRegistryLocation(loc) ? await makeClient(o, io) : undefined;
    try {
      const img = await openImage(arg, client, 'push');
      const { resolveSubject } = await import('../verify/verify.js');
      const root = await resolveSubject(img.target, img.reference);
      const { attestImage } = await import('../attest/attest.js');
      const upload = o.tlogUpload !== false;
      const r = await attestImage(img.target, root, {
        key,
        keyless: token ? { identityToken: token, fulcioURL: o.fulcioUrl } : undefined,
        rekorURL: upload ? (o.rekorUrl ?? (key ? undefined : DEFAULT_REKOR_URL)) : undefined,
        rekorEntryType: o.rekorEntryType as 'dsse' | 'intoto',
        tsaURL: o.tsaUrl,
        predicate,
        subjectName: img.repository ?? '',
        formats,
        replace: o.replace,
      });
      const lines = [`attested ${img.display}@${r.digest} (${r.signer})`, `predicate type: ${r.predicateType}`];
      for (const a of r.attestations) lines.push(`  ${a.format}: ${a.location}${a.added ? '' : ' (already there)'}`);
      print(io, !!o.json, lines.join('\n'), { reference: img.display, ...r });
    } finally {
      await client?.close();
    }
  });

  registryOptions(
    program
      .command('verify-attestation')
      .description('verify the attestations of an image (sha256-<hex>.att and Sigstore bundle referrers) and print the verified in-toto statements')
      .argument('<image>', 'docker://host/repo:tag | host/repo@sha256:… | oci:<dir>[:tag]')
      .option('--type <type>', 'predicate type: slsaprovenance|slsaprovenance1|spdxjson|cyclonedx|vuln|openvex|custom, or a URI', 'custom')
      .option('--key <file>', 'trusted public key (repeatable: any of them)', collect)
      .option('--certificate-identity <san>', 'keyless: exact certificate identity (email or URI)')
      .option('--certificate-identity-regexp <re>', 'keyless: certificate identity, anchored regular expression')
      .option('--certificate-oidc-issuer <url>', 'keyless: exact OIDC issuer')
      .option('--certificate-oidc-issuer-regexp <re>', 'keyless: OIDC issuer, anchored regular expression')
      .option('--trusted-root <file>', 'trusted_root.json (Fulcio CAs, Rekor, CT logs, TSAs)')
      .option('--policy <file>', 'trust policy (kbundle YAML: its attestations: entry for --type, else the entry signers; or containers-policy.json)')
      .option('--builder-id <id>', 'SLSA provenance: require this builder id in the predicate')
      .option('--insecure-ignore-tlog', 'keyless: accept an RFC 3161 timestamp instead of a transparency-log entry')
      .option('--insecure-ignore-sct', 'keyless: do not require an SCT in the certificate')
      .option('--require-tlog', 'keyed: require a verified transparency-log entry (needs --trusted-root)')
      .option('--format <f>', 'bundle, legacy or both', 'both')
      .option('--json', 'print the verified statements as JSON'),
    { json: false },
  ).action(async (arg: string, o: VerifyAttestationFlags) => {
    const { predicateTypeUri, PredicateTypes } = await import('../attest/predicate.js');
    const predicateType = predicateTypeUri(o.type);
    if (o.builderId !== undefined && predicateType !== PredicateTypes.slsaprovenance && predicateType !== PredicateTypes.slsaprovenance1) {
      throw new UserError('--builder-id applies to SLSA provenance (--type slsaprovenance or slsaprovenance1)');
    }
    const req = await requirementFromFlags(o, arg, predicateType, io.env);
    const loc = parseImageArgument(arg, 'image');
    const client = isRegistryLocation(loc) ? await makeClient(o, io) : undefined;
    let digest: string | undefined;
    try {
      const img = await openImage(arg, client, 'pull');
      const [{ resolveSubject }, { verifyAttestations }] = await Promise.all([import('../verify/verify.js'), import('../verify/attestations.js')]);
      const subject = await resolveSubject(img.target, img.reference);
      digest = subject.digest;
      const display = `${img.display}${img.display.includes('@') ? '' : `@${subject.digest}`}`;
      const r = await verifyAttestations(img.target, subject, req, { display });
      const lines = [`verified ${display}: ${r.attestations.length} attestation(s) of type ${o.type}`, ...r.attestations.map(describeAttestation)];
      if (r.rejected.length) lines.push(`not accepted: ${r.rejected.length}`, ...r.rejected.map((x) => `  ${x.format} ${x.location}: ${x.reason}`));
      print(io, !!o.json, lines.join('\n'), { verified: true, reference: img.display, digest: subject.digest, predicateType, attestations: r.attestations, rejected: r.rejected });
    } catch (e) {
      if (o.json && e instanceof KbError) io.stdout.write(`${JSON.stringify({ verified: false, reference: arg, digest, predicateType, error: e.message }, null, 2)}\n`);
      throw e;
    } finally {
      await client?.close();
    }
  });
}
