/**
 * The trust policy a rollout carries to its nodes. A NodeOp has no volumes: the operator mounts
 * only the host root into its Job and preflight Pod, so a policy cannot arrive as a file from a
 * ConfigMap. It travels inside the command instead (`--policy-base64`), part of the NodeOp object
 * the administrator applies, so nothing else in the cluster can swap it. It must therefore be
 * self-contained: every key file it names is read here and inlined (containers-policy.json
 * `keyPath` → `keyData`, …; kbundle YAML `key` → `keyData`).
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { errorMessage, fsErrorCode, KbError, UserError } from '../errors.js';
import { parseTrustPolicy } from '../policy/index.js';

export interface ShippedPolicy {
  /** The policy text, self-contained. */
  text: string;
  /** What the workstation and every node check with: base64 of `text`. */
  base64: string;
  /** Where it came from, for messages and annotations. */
  source: string;
}

function readFrom(base: string, path: string, where: string): Buffer {
  const p = resolve(base, path);
  try {
    return readFileSync(p);
  } catch (e) {
    throw new KbError(fsErrorCode(e), `${where}: cannot read ${p} (${errorMessage(e)})`, { cause: e });
  }
}

const PATH_TO_DATA: [string, string][] = [
  ['keyPath', 'keyData'],
  ['rekorPublicKeyPath', 'rekorPublicKeyData'],
];
const PATHS_TO_DATAS: [string, string][] = [
  ['keyPaths', 'keyDatas'],
  ['rekorPublicKeyPaths', 'rekorPublicKeyDatas'],
];

/** containers-policy.json with every file it names inlined (base64, as the format wants). */
function inlineContainersPolicy(text: string, path: string): string {
  const base = dirname(resolve(path));
  const doc = JSON.parse(text) as { default?: unknown[]; transports?: Record<string, Record<string, unknown[]>> };
  const requirementLists = [doc.default ?? [], ...Object.values(doc.transports ?? {}).flatMap((scopes) => Object.values(scopes ?? {}))];
  for (const list of requirementLists) {
    for (const r of list as Record<string, unknown>[]) {
      if (!r || r.type !== 'sigstoreSigned') continue;
      for (const [from, to] of PATH_TO_DATA) {
        if (typeof r[from] === 'string') {
          r[to] = readFrom(base, r[from] as string, `${path}: ${from}`).toString('base64');
          delete r[from];
        }
      }
      for (const [from, to] of PATHS_TO_DATAS) {
        if (Array.isArray(r[from])) {
          r[to] = (r[from] as string[]).map((p) => readFrom(base, p, `${path}: ${from}`).toString('base64'));
          delete r[from];
        }
      }
      const fulcio = r.fulcio as Record<string, unknown> | undefined;
      if (fulcio && typeof fulcio.caPath === 'string') {
        fulcio.caData = readFrom(base, fulcio.caPath, `${path}: fulcio.caPath`).toString('base64');
        delete fulcio.caPath;
      }
    }
  }
  return `${JSON.stringify(doc)}\n`;
}

/** kbundle YAML policy with key files inlined; trusted roots cannot travel (they are large files). */
function inlineKbundlePolicy(text: string, path: string): string {
  const base = dirname(resolve(path));
  const doc = parseYaml(text) as { trustedRoots?: Record<string, string>; policies?: { signers?: Record<string, unknown>[] }[] };
  const roots = Object.keys(doc.trustedRoots ?? {});
  const keyless = (doc.policies ?? []).some((p) => (p.signers ?? []).some((s) => 'keyless' in s || s.trustedRoot !== undefined));
  if (roots.length || keyless) {
    throw new KbError('UNSUPPORTED', `${path}: this policy needs trusted root files (${roots.join(', ') || 'keyless signers'}), which cannot travel inside a NodeOp`, {
      hint: 'put the policy and its trusted roots on the nodes (usr/local/etc/kbundle/policy.json) and use --node-policy; --policy here then only checks on the workstation',
    });
  }
  for (const p of doc.policies ?? []) {
    for (const s of p.signers ?? []) {
      if (typeof s.key === 'string') {
        s.keyData = readFrom(base, s.key, `${path}: key`).toString('utf8');
        s.name ??= basename(s.key);
        delete s.key;
      }
    }
  }
  return stringifyYaml(doc);
}

function shipped(text: string, source: string): ShippedPolicy {
  parseTrustPolicy(text, source); // what the nodes will parse must parse here first
  return { text, base64: Buffer.from(text).toString('base64'), source };
}

/** The policy for `--policy FILE`, self-contained. */
export function shipPolicyFile(path: string): ShippedPolicy {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new KbError(fsErrorCode(e), `--policy ${path}: cannot read it (${errorMessage(e)})`, { cause: e });
  }
  parseTrustPolicy(text, path); // report problems against the file the user wrote
  const json = text.trimStart().startsWith('{');
  return shipped(json ? inlineContainersPolicy(text, path) : inlineKbundlePolicy(text, path), path);
}

/** The policy for `--key PUB`: signatures by these keys, for exactly this image. */
export function shipKeyPolicy(keyFiles: string[], repository: string): ShippedPolicy {
  if (keyFiles.length === 0) throw new UserError('no key given');
  const doc = {
    version: 1,
    policies: [
      {
        name: 'kbundle rollout',
        images: [repository],
        signers: keyFiles.map((k) => ({ keyData: readFrom(process.cwd(), k, '--key').toString('utf8'), name: basename(k) })),
      },
    ],
  };
  return shipped(stringifyYaml(doc), `--key ${keyFiles.join(', ')}`);
}
