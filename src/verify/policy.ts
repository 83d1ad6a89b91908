/**
 * Trust policy files (YAML) a node carries: which images (globs) need which signers — public keys,
 * or keyless identities with a trusted root — plus required annotations. First matching entry
 * wins; an image no entry covers is refused. Relative paths resolve against the policy file.
 */
import { readTextFileCapped } from '../util/read-file.js';
import { parseYamlText, YAML_CAPS } from '../util/yaml.js';
import { z } from 'zod';
import { KbError, UserError } from '../errors.js';
import { loadPublicKeys, parsePublicKeys } from '../sign/keys.js';
import { exactMatcher, regexpMatcher, type Matcher } from './identity.js';
import type { AttestationRequirement, SignatureFormat, SignerRequirement, VerificationPolicy } from './requirements.js';
import { PredicateTypes, predicateTypeUri } from '../attest/predicate.js';
import { loadTrustedRoot, type TrustedRoot } from './trust.js';
import { localPolicyPaths, type PolicyPaths } from './policy-paths.js';

const KeySignerSchema = z
  .object({
    key: z.string().min(1).optional(),
    keyData: z.string().min(1).optional(),
    name: z.string().min(1).optional(),
    tlog: z.boolean().default(false),
    trustedRoot: z.string().min(1).optional(),
  })
  .strict()
  .refine((s) => !!s.key !== !!s.keyData, { message: 'give exactly one of key (a file) or keyData (inline PEM)' })
  .refine((s) => !s.tlog || !!s.trustedRoot, { message: 'tlog: true needs a trustedRoot holding the transparency log key' });

const KeylessSchema = z
  .object({
    identity: z.string().min(1).optional(),
    identityRegExp: z.string().min(1).optional(),
    issuer: z.string().min(1).optional(),
    issuerRegExp: z.string().min(1).optional(),
    trustedRoot: z.string().min(1),
    tlog: z.boolean().default(true),
    ctlog: z.boolean().default(true),
  })
  .strict()
  .refine((s) => !!s.identity !== !!s.identityRegExp, { message: 'give exactly one of identity or identityRegExp' })
  .refine((s) => !!s.issuer !== !!s.issuerRegExp, { message: 'give exactly one of issuer or issuerRegExp' });

const KeylessSignerSchema = z.object({ keyless: KeylessSchema }).strict();
type Signer = z.infer<typeof KeySignerSchema> | z.infer<typeof KeylessSignerSchema>;

const AttestationEntrySchema = z
  .object({
    /** cosign --type name (slsaprovenance1, spdxjson, …) or a predicate type URI. */
    type: z.string().min(1),
    /** SLSA provenance: the builder id the predicate must name. */
    builderId: z.string().min(1).optional(),
    /** Who must have signed it (default: the entry's signers). */
    signers: z.array(z.record(z.string(), z.unknown())).min(1).optional(),
    formats: z
      .array(z.enum(['bundle', 'legacy']))
      .min(1)
      .optional(),
  })
  .strict();

const EntrySchema = z
  .object({
    name: z.string().min(1).optional(),
    images: z.array(z.string().min(1)).min(1, 'list at least one image glob'),
    require: z.enum(['any', 'all']).default('any'),
    signers: z.array(z.record(z.string(), z.unknown())).min(1, 'list at least one signer'),
    annotations: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()]).transform(String)).default({}),
    formats: z
      .array(z.enum(['bundle', 'legacy']))
      .min(1)
      .optional(),
    /** Attestations the image must carry besides its signature. */
    attestations: z.array(AttestationEntrySchema).optional(),
  })
  .strict();

const PolicyFileSchema = z
  .object({
    version: z.literal(1, { errorMap: () => ({ message: 'must be 1' }) }),
    trustedRoots: z.record(z.string(), z.string().min(1)).default({}),
    policies: z.array(EntrySchema).min(1, 'list at least one policy entry'),
  })
  .strict();

type AttestationEntry = Omit<z.infer<typeof AttestationEntrySchema>, 'signers'> & { signers?: Signer[]; predicateType: string };
type PolicyFile = Omit<z.infer<typeof PolicyFileSchema>, 'policies'> & {
  policies: (Omit<z.infer<typeof EntrySchema>, 'signers' | 'attestations'> & { signers: Signer[]; attestations?: AttestationEntry[] })[];
};

/** `*` within one path segment, `**` across segments, `?` one character; anchored. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export interface LoadedPolicy {
  path: string;
  file: PolicyFile;
  /** The policy for one image (`registry/repository`, or `oci:<dir>`); throws when none covers it. */
  policyFor(image: string): Promise<VerificationPolicy>;
}

function describeZod(e: z.ZodError, what: string, prefix: (string | number)[] = []): UserError {
  // A misspelt field also makes the real one "Required": name the unknown field first.
  const i = e.issues.find((x) => x.code === 'unrecognized_keys') ?? e.issues[0]!;
  const full = [...prefix, ...i.path];
  const path = full.length ? full.join('.') : '(top level)';
  const msg = i.code === 'unrecognized_keys' ? `unknown field(s) ${i.keys.map((k) => `"${k}"`).join(', ')}` : i.message;
  return new UserError(`${what}: invalid trust policy at ${path}: ${msg}`, 'see signing/policies/ for examples');
}

/** `paths`: how the file paths in it are read (src/verify/policy-paths.ts); default relative to `path`. */
export function parsePolicy(text: string, path: string, paths: PolicyPaths = localPolicyPaths(path)): LoadedPolicy {
  const raw = parseYamlText(text, path, YAML_CAPS.policy).value;
  const r = PolicyFileSchema.safeParse(raw);
  if (!r.success) throw describeZod(r.error, path);
  const signer = (s: Record<string, unknown>, at: (string | number)[]): Signer => {
    const schema = 'keyless' in s ? KeylessSignerSchema : KeySignerSchema;
    const sr = schema.safeParse(s);
    if (!sr.success) throw describeZod(sr.error, path, at);
    return sr.data;
  };
  const file: PolicyFile = {
    ...r.data,
    policies: r.data.policies.map((e, i) => ({
      ...e,
      signers: e.signers.map((s, j) => signer(s, ['policies', i, 'signers', j])),
      attestations: e.attestations?.map((a, k) => {
        const at = `${path}: invalid trust policy at policies.${i}.attestations.${k}`;
        let predicateType: string;
        try {
          predicateType = predicateTypeUri(a.type);
        } catch (err) {
          throw new UserError(`${at}.type: ${(err as Error).message.replace(/^--type:? ?/, '')}`, 'see signing/policies/ for examples');
        }
        if (a.builderId !== undefined && predicateType !== PredicateTypes.slsaprovenance && predicateType !== PredicateTypes.slsaprovenance1) {
          throw new UserError(`${at}.builderId: only SLSA provenance predicates (slsaprovenance, slsaprovenance1) name a builder`);
        }
        return { ...a, predicateType, signers: a.signers?.map((s, j) => signer(s, ['policies', i, 'attestations', k, 'signers', j])) };
      }),
    })),
  };
  const rel = (p: string): string => paths.resolve(p);
  for (const [i, e] of file.policies.entries()) {
    for (const g of e.images) {
      if (/[[\]{}]/.test(g)) throw new UserError(`${path}: invalid trust policy at policies.${i}.images: "${g}": only * ** and ? are glob characters`);
    }
    const all = [
      ...e.signers.map((s, j) => ({ s, where: `policies.${i}.signers.${j}` })),
      ...(e.attestations ?? []).flatMap((a, k) => (a.signers ?? []).map((s, j) => ({ s, where: `policies.${i}.attestations.${k}.signers.${j}` }))),
    ];
    for (const { s, where } of all) {
      const root = 'keyless' in s ? s.keyless.trustedRoot : s.trustedRoot;
      if (root && !(root in file.trustedRoots) && !/[/\\]|\.json$/.test(root)) {
        throw new UserError(`${path}: invalid trust policy at ${where}: trusted root "${root}" is neither a name under trustedRoots nor a file path`);
      }
      if ('keyless' in s) {
        const k = s.keyless;
        const what = `${path}: ${where}.keyless`;
        if (k.identityRegExp) regexpMatcher(k.identityRegExp, `${what}.identityRegExp`);
        if (k.issuerRegExp) regexpMatcher(k.issuerRegExp, `${what}.issuerRegExp`);
      }
    }
  }
  const roots = new Map<string, Promise<TrustedRoot>>();
  const rootFor = (ref: string): Promise<TrustedRoot> => {
    const p = rel(file.trustedRoots[ref] ?? ref);
    let got = roots.get(p);
    if (!got) {
      got = loadTrustedRoot(p);
      roots.set(p, got);
    }
    return got;
  };
  const matchers = file.policies.map((e) => e.images.map(globToRegExp));
  return {
    path,
    file,
    async policyFor(image: string): Promise<VerificationPolicy> {
      const i = matchers.findIndex((ms) => ms.some((m) => m.test(image)));
      if (i < 0)
        throw new KbError('REFUSED', `${image}: no entry of the trust policy ${path} covers this image`, { hint: 'add its repository to a policy entry (images: globs), or verify with --key' });
      const e = file.policies[i]!;
      const requirements = async (list: Signer[]): Promise<SignerRequirement[]> => {
        const signers: SignerRequirement[] = [];
        for (const s of list) {
          if ('keyless' in s) {
            const k = s.keyless;
            const identity: Matcher = k.identity ? exactMatcher(k.identity, 'identity') : regexpMatcher(k.identityRegExp!, 'identityRegExp');
            const issuer: Matcher = k.issuer ? exactMatcher(k.issuer, 'issuer') : regexpMatcher(k.issuerRegExp!, 'issuerRegExp');
            signers.push({ kind: 'keyless', name: k.identity ?? `/${k.identityRegExp}/`, identity, issuer, trustedRoot: await rootFor(k.trustedRoot), tlog: k.tlog, ctlog: k.ctlog });
          } else {
            const keys = s.key ? await loadPublicKeys(rel(s.key)) : parsePublicKeys(s.keyData!, `${path}: keyData`);
            signers.push({ kind: 'key', name: s.name ?? s.key ?? 'inline key', keys, tlog: s.tlog, trustedRoot: s.trustedRoot ? await rootFor(s.trustedRoot) : undefined });
          }
        }
        return signers;
      };
      const signers = await requirements(e.signers);
      const attestations: AttestationRequirement[] = [];
      for (const a of e.attestations ?? []) {
        attestations.push({
          predicateType: a.predicateType,
          signers: a.signers ? await requirements(a.signers) : signers,
          ...(a.builderId !== undefined ? { builderId: a.builderId } : {}),
          ...(a.formats ? { formats: a.formats as SignatureFormat[] } : {}),
        });
      }
      return {
        name: e.name ?? `#${i + 1}`,
        signers,
        require: e.require,
        annotations: e.annotations,
        formats: e.formats as SignatureFormat[] | undefined,
        ...(attestations.length ? { attestations } : {}),
      };
    },
  };
}

export async function loadPolicy(path: string): Promise<LoadedPolicy> {
  const text = await readTextFileCapped(path, YAML_CAPS.policy.maxBytes, path, { noun: 'the trust policy' });
  return parsePolicy(text, path);
}
