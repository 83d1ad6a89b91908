import { isAbsolute, join, posix, resolve } from 'node:path';
import { z } from 'zod';
import { KbError, UserError } from '../errors.js';
import { checkUrl } from '../net/url.js';
import { parseYamlText, YAML_CAPS } from '../util/yaml.js';
import { isKnownPlatform, KNOWN_PLATFORMS } from '../oci/platform.js';
import { checkSysextBundleSpec, SysextSettingsSchema } from '../sysext/spec.js';
import { SourceFolder } from '../layer/source-folder.js';
import { RequiresSchema } from '../requires/requires.js';

/**
 * bundle.yaml — the spec of one Kairos bundle (docs: bundles/README.md).
 * Everything the builder needs is validated here, before a single byte is written.
 */

export const BUNDLE_TYPES = ['run', 'container', 'sysext', 'confext'] as const;
export type BundleType = (typeof BUNDLE_TYPES)[number];
export const DISTROS = ['k3s', 'k0s'] as const;
export type Distro = (typeof DISTROS)[number];

const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const VERSION_RE = /^[0-9A-Za-z][0-9A-Za-z._+-]{0,127}$/;
const CONFIG_KEY_RE = /^[a-z_][a-z0-9_]*$/;
const SHA256_RE = /^[a-f0-9]{64}$/;
/** SPDX licence expression: ids (letters, digits, `.`, `-`, `+`, LicenseRef-…), AND/OR/WITH, parentheses. */
const SPDX_EXPRESSION_RE = /^(?=.*[A-Za-z0-9])[A-Za-z0-9.+:() -]{1,256}$/;

const modeSchema = z
  .union([z.number().int(), z.string().regex(/^0?[0-7]{3,4}$/, 'must be an octal mode such as "0644"')])
  .transform((m) => (typeof m === 'number' ? m : parseInt(m, 8)))
  .refine((m) => m >= 0 && m <= 0o7777, 'must be between 0000 and 7777');

/**
 * `signature:` of a url download: who must have signed the pinned file. Keyless: a Sigstore bundle
 * (`cosign sign-blob --bundle`) whose certificate carries this identity and issuer; keyed: a public
 * key in the bundle folder and a raw signature (`--output-signature`) or a bundle.
 */
const signatureSchema = z
  .object({
    bundle: z.string().url().optional(),
    sig: z.string().url().optional(),
    key: z.string().min(1).optional(),
    'certificate-identity': z.string().min(1).optional(),
    'certificate-identity-regexp': z.string().min(1).optional(),
    'certificate-oidc-issuer': z.string().min(1).optional(),
    'certificate-oidc-issuer-regexp': z.string().min(1).optional(),
  })
  .strict()
  .superRefine((s, ctx) => {
    const identity = s['certificate-identity'] !== undefined || s['certificate-identity-regexp'] !== undefined;
    const issuer = s['certificate-oidc-issuer'] !== undefined || s['certificate-oidc-issuer-regexp'] !== undefined;
    const issue = (message: string, path: string[] = []) => ctx.addIssue({ code: 'custom', path, message });
    for (const u of ['bundle', 'sig'] as const) if (s[u] && !/^https?:\/\//.test(s[u])) issue('must be an http(s) URL', [u]);
    if (s.key) {
      if (identity || issuer) issue('give either key (a public key) or certificate-identity + certificate-oidc-issuer (keyless), not both');
      if (!!s.sig === !!s.bundle) issue('with key, give exactly one of sig (a raw signature, cosign sign-blob --output-signature) or bundle (a Sigstore bundle)');
      return;
    }
    if (s.sig) issue('sig (a raw signature) needs key; keyless signatures come as a Sigstore bundle', ['sig']);
    if (!identity && !issuer) return issue('say who signed: key (a public key in the bundle folder), or certificate-identity + certificate-oidc-issuer with bundle');
    if (s['certificate-identity'] !== undefined && s['certificate-identity-regexp'] !== undefined) issue('give one of certificate-identity or certificate-identity-regexp');
    if (s['certificate-oidc-issuer'] !== undefined && s['certificate-oidc-issuer-regexp'] !== undefined) issue('give one of certificate-oidc-issuer or certificate-oidc-issuer-regexp');
    if (!identity) issue('keyless needs certificate-identity (or certificate-identity-regexp)');
    if (!issuer) issue('keyless needs certificate-oidc-issuer (or certificate-oidc-issuer-regexp)');
    if (!s.bundle) issue('keyless needs bundle: the URL of the Sigstore bundle (cosign sign-blob --bundle)', ['bundle']);
  });

export type SignatureSpec = z.infer<typeof signatureSchema>;

const fileSchema = z
  .object({
    src: z.string().min(1).optional(),
    url: z
      .string()
      .superRefine((u, ctx) => {
        try {
          checkUrl(u, 'url');
        } catch (e) {
          ctx.addIssue({ code: 'custom', message: (e as Error).message.replace(/^url: /, '') });
        }
      })
      .optional(),
    sha256: z.string().regex(SHA256_RE, 'must be 64 lowercase hex characters').optional(),
    /** With url: the download is a tar or tar.gz archive, and this member of it is the file. */
    extract: z.string().min(1).optional(),
    dst: z.string().min(1),
    mode: modeSchema.optional(),
    /** With url: the SPDX licence expression of the download (recorded in SBOMs). */
    license: z.string().regex(SPDX_EXPRESSION_RE, 'must be an SPDX licence expression, e.g. Apache-2.0 or MIT OR GPL-2.0-only').optional(),
    /** With url: the signature the download must carry besides its sha256. */
    signature: signatureSchema.optional(),
  })
  .strict()
  .superRefine((f, ctx) => {
    if (!!f.src === !!f.url) ctx.addIssue({ code: 'custom', message: 'give exactly one of src (a path in the bundle) or url (a download)' });
    if (f.url && !f.sha256) ctx.addIssue({ code: 'custom', path: ['sha256'], message: 'a url download needs its sha256 pinned' });
    if (f.src && f.sha256) ctx.addIssue({ code: 'custom', path: ['sha256'], message: 'sha256 is only for url downloads' });
    if (f.license && !f.url) ctx.addIssue({ code: 'custom', path: ['license'], message: 'license is declared for url downloads; the bundle-level license: covers its own files' });
    if (f.signature && !f.url) ctx.addIssue({ code: 'custom', path: ['signature'], message: 'signature is checked on url downloads; a bundle file is trusted as it is' });
    if (f.extract && !f.url) ctx.addIssue({ code: 'custom', path: ['extract'], message: 'extract names a member of a url download (an archive); a bundle file is used as it is' });
  });

const scalar = z.union([z.string(), z.number(), z.boolean()]).transform((v) => String(v));

const chartSchema = z
  .object({
    name: z.string().regex(NAME_RE, 'must be a DNS label: lowercase letters, digits and "-"'),
    chart: z.string().min(1),
    repo: z.string().min(1),
    version: z.string().min(1),
    namespace: z.string().regex(NAME_RE, 'must be a DNS label').default('kube-system'),
    create_namespace: z.boolean().default(true),
    values: z.string().default(''),
    distros: z
      .array(z.enum(DISTROS))
      .min(1)
      .default([...DISTROS]),
  })
  .strict();

const manifestSchema = z
  .object({
    src: z.string().min(1),
    distros: z
      .array(z.enum(DISTROS))
      .min(1)
      .default([...DISTROS]),
  })
  .strict();

export const BundleSpecSchema = z
  .object({
    name: z.string().regex(NAME_RE, 'must be lowercase letters, digits and "-", 1-63 characters, starting and ending with a letter or digit'),
    version: z.string().regex(VERSION_RE, 'must start with a letter or digit and use only letters, digits, ".", "_", "+", "-" (e.g. 1.2.3)'),
    description: z.string().min(1, 'must not be empty'),
    type: z.enum(BUNDLE_TYPES).default('run'),
    platforms: z.array(z.string()).min(1).default(['linux/amd64', 'linux/arm64']),
    source: z.string().optional(),
    license: z.string().optional(),
    files: z.array(fileSchema).default([]),
    platform_files: z.record(z.string(), z.array(fileSchema)).default({}),
    run: z.string().min(1).optional(),
    config: z
      .object({
        // kairos-agent reads keys as jq paths: "-" or a leading digit would need quoting there.
        key: z
          .string()
          .regex(/^[a-z_][a-z0-9_]*$/, 'must be a cloud-config key usable as a jq path: lowercase letters, digits and "_", not starting with a digit')
          .optional(),
        values: z.record(z.string(), scalar).default({}),
        /** Optional extended regular expressions (grep -E) a value must match on the node. */
        patterns: z.record(z.string(), z.string()).default({}),
      })
      .strict()
      .default({}),
    distro: z.enum(['auto', ...DISTROS]).default('auto'),
    manifests: z.array(manifestSchema).default([]),
    charts: z.array(chartSchema).default([]),
    /** extension-release settings for type: sysext | confext (src/sysext/README.md). */
    sysext: SysextSettingsSchema.optional(),
    /** What a node must be to take this bundle (src/requires/requires.ts); stored as an annotation. */
    requires: RequiresSchema.optional(),
  })
  .strict();

export type BundleSpecInput = z.input<typeof BundleSpecSchema>;
export type BundleSpec = z.infer<typeof BundleSpecSchema> & { config: { key: string } };
export type FileSpec = z.infer<typeof fileSchema>;
export type ChartSpec = z.infer<typeof chartSchema>;

export interface LoadedSpec {
  dir: string;
  specPath: string;
  spec: BundleSpec;
  /** The bundle folder every source is read through (made from `dir` when absent). */
  folder?: SourceFolder;
}

/** The folder a loaded spec's sources are read through. */
export function sourceFolderOf(loaded: LoadedSpec): SourceFolder {
  return (loaded.folder ??= new SourceFolder(loaded.dir));
}

/** Template placeholders in manifests and chart fields: `{{ key }}`, key from config.values. */
export const PLACEHOLDER_RE = /\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}/g;

function declared0(spec: BundleSpec): Set<string> {
  return new Set(Object.keys(spec.config.values));
}

function specError(specPath: string, field: string, message: string, hint?: string): UserError {
  return new UserError(`${specPath}: ${field}: ${message}`, hint);
}

/** Normalise an in-image destination: relative, POSIX, no `..`, no empty parts. */
export function normaliseDestination(dst: string, specPath: string, field: string): string {
  if (dst.startsWith('/') || isAbsolute(dst)) throw specError(specPath, field, `"${dst}" is absolute`, 'destinations are relative to the image root, e.g. usr/local/bin/tool');
  if (dst.includes('\\')) throw specError(specPath, field, `"${dst}" contains a backslash`);
  if (dst.split('/').includes('..')) throw specError(specPath, field, `"${dst}" contains ".."`, 'destinations must stay inside the image');
  const n = posix.normalize(dst).replace(/\/+$/, '');
  if (n === '' || n === '.') throw specError(specPath, field, `"${dst}" names the image root, not a file`);
  return n;
}

/**
 * Resolve a source path inside the bundle folder (src/builder/source-path.ts): `..`, absolute
 * paths and symlinks that lead out of the folder are refused, naming the file and field.
 */
export function bundlePath(dir: string | SourceFolder, src: string, specPath: string, field: string, followFinal = false): string {
  const folder = typeof dir === 'string' ? new SourceFolder(dir) : dir;
  return folder.resolve(src, `${specPath}: ${field}`, { followFinal });
}

/** The source must exist (as a file, folder or symlink; FIFOs, devices and outside hard links are refused). */
function mustExist(folder: SourceFolder, path: string, specPath: string, field: string, shown: string): void {
  const st = folder.lstat(path);
  if (!st) throw specError(specPath, field, `file not found: ${shown}`, 'paths are relative to the folder holding bundle.yaml');
  folder.entry(path, `${specPath}: ${field}`, st);
}

/** Read, parse and fully validate `<dir>/bundle.yaml`. */
export async function loadBundleSpec(dirArg: string): Promise<LoadedSpec> {
  const dir = resolve(dirArg);
  const specPath = join(dirArg, 'bundle.yaml');
  const notFound = () => new KbError('NOT_FOUND', `${specPath}: not found`, { hint: `a bundle is a folder with a bundle.yaml; see bundles/README.md` });
  let folder: SourceFolder;
  try {
    folder = new SourceFolder(dir);
  } catch {
    throw notFound();
  }
  // bundle.yaml itself is read like every source: no symlink out of the folder, no FIFO, capped.
  const specFile = folder.resolve('bundle.yaml', specPath, { followFinal: true });
  const st = folder.lstat(specFile);
  if (!st) throw notFound();
  if (st.size > YAML_CAPS.bundleSpec.maxBytes) throw new UserError(`${specPath}: ${st.size} bytes, over the ${YAML_CAPS.bundleSpec.maxBytes}-byte limit for a bundle.yaml`);
  const raw = parseYamlText(folder.readFile(specFile, specPath).toString('utf8'), specPath, YAML_CAPS.bundleSpec).value;
  const parsed = BundleSpecSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.length ? issue.path.join('.') : '(top level)';
    let msg = issue.message;
    if (issue.code === 'unrecognized_keys') msg = `unknown field(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
    if (issue.code === 'invalid_type' && issue.received === 'undefined') msg = 'is required';
    throw specError(specPath, field, msg);
  }
  const spec = { ...parsed.data, config: { ...parsed.data.config, key: parsed.data.config.key ?? parsed.data.name.replace(/-/g, '_') } } as BundleSpec;
  validateSemantics(folder, specPath, spec);
  return { dir, specPath, spec, folder };
}

function validateSemantics(folder: SourceFolder, specPath: string, spec: BundleSpec): void {
  checkSysextBundleSpec(spec, specPath);
  const seenPlatforms = new Set<string>();
  spec.platforms.forEach((p, i) => {
    if (!isKnownPlatform(p)) throw specError(specPath, `platforms.${i}`, `unknown platform "${p}"`, `known: ${KNOWN_PLATFORMS.join(', ')}`);
    if (seenPlatforms.has(p)) throw specError(specPath, `platforms.${i}`, `"${p}" is listed twice`);
    seenPlatforms.add(p);
  });
  for (const p of Object.keys(spec.platform_files)) {
    if (!seenPlatforms.has(p)) throw specError(specPath, `platform_files.${p}`, `"${p}" is not in platforms (${spec.platforms.join(', ')})`);
  }
  for (const k of Object.keys(spec.config.values)) {
    if (!CONFIG_KEY_RE.test(k)) throw specError(specPath, `config.values.${k}`, 'keys must be lowercase letters, digits and "_" (they become kairos-agent config get <key>.<name>)');
    if (/[\n\r]/.test(spec.config.values[k]!)) throw specError(specPath, `config.values.${k}`, 'defaults must be single-line values');
  }

  for (const [k, re] of Object.entries(spec.config.patterns)) {
    if (!declared0(spec).has(k)) throw specError(specPath, `config.patterns.${k}`, `no config value "${k}" to check`, 'patterns apply to keys declared in config.values');
    try {
      new RegExp(re);
    } catch {
      throw specError(specPath, `config.patterns.${k}`, `"${re}" is not a valid regular expression`);
    }
    if (!new RegExp(re).test(spec.config.values[k]!)) throw specError(specPath, `config.values.${k}`, `default "${spec.config.values[k]}" does not match its own pattern ${re}`);
  }

  const checkFiles = (files: FileSpec[], field: string) => {
    for (const [i, f] of files.entries()) {
      normaliseDestination(f.dst, specPath, `${field}.${i}.dst`);
      if (f.src) mustExist(folder, bundlePath(folder, f.src, specPath, `${field}.${i}.src`), specPath, `${field}.${i}.src`, f.src);
      const sig = f.signature;
      if (sig?.key) mustExist(folder, bundlePath(folder, sig.key, specPath, `${field}.${i}.signature.key`, true), specPath, `${field}.${i}.signature.key`, sig.key);
      for (const k of ['certificate-identity-regexp', 'certificate-oidc-issuer-regexp'] as const) {
        if (sig?.[k] === undefined) continue;
        try {
          new RegExp(sig[k], 'u');
        } catch {
          throw specError(specPath, `${field}.${i}.signature.${k}`, `"${sig[k]}" is not a valid regular expression`);
        }
      }
    }
  };
  checkFiles(spec.files, 'files');
  for (const [p, files] of Object.entries(spec.platform_files)) checkFiles(files, `platform_files.${p}`);

  const hasManifests = spec.manifests.length > 0 || spec.charts.length > 0;
  if (spec.type === 'run') {
    if (spec.run) {
      mustExist(folder, bundlePath(folder, spec.run, specPath, 'run', true), specPath, 'run', spec.run);
    } else if (!hasManifests) {
      throw specError(specPath, 'run', 'a run bundle needs a run.sh (run: run.sh) or manifests/charts to place', 'add run: run.sh, or declare manifests: / charts:');
    }
  } else {
    if (spec.run) throw specError(specPath, 'run', `only run bundles have a run.sh (type is ${spec.type})`);
    if (hasManifests) throw specError(specPath, spec.manifests.length ? 'manifests' : 'charts', `manifests and charts are placed by run.sh, so they need type: run (type is ${spec.type})`);
  }

  const declared = new Set(Object.keys(spec.config.values));
  const checkPlaceholders = (text: string, field: string) => {
    for (const m of text.matchAll(PLACEHOLDER_RE)) {
      if (!declared.has(m[1]!)) throw specError(specPath, field, `uses {{ ${m[1]} }} but config.values has no "${m[1]}"`, 'declare it with a default under config.values');
    }
  };
  for (const [i, m] of spec.manifests.entries()) {
    const p = bundlePath(folder, m.src, specPath, `manifests.${i}.src`, true);
    mustExist(folder, p, specPath, `manifests.${i}.src`, m.src);
    checkPlaceholders(folder.readFile(p, `${specPath}: manifests.${i}.src`).toString('utf8'), `manifests.${i}.src (${m.src})`);
  }
  const chartNames = new Set<string>();
  for (const [i, c] of spec.charts.entries()) {
    if (chartNames.has(c.name)) throw specError(specPath, `charts.${i}.name`, `"${c.name}" is declared twice`);
    chartNames.add(c.name);
    for (const f of ['chart', 'repo', 'version', 'values'] as const) checkPlaceholders(c[f], `charts.${i}.${f}`);
  }
}
