/**
 * Validate objects against the Kairos operator's released CRDs (test/fixtures/kairos-operator, the
 * upstream config/crd/bases files) with ajv, independently of kbundle's own validator: the
 * structural schema as an API server with strict field validation applies it (unknown fields are
 * errors; x-kubernetes-* markers carry no validation here; int32 ranges).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import AjvModule from 'ajv';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from './cli.js';

export const CRD_DIR = join(REPO_ROOT, 'test/fixtures/kairos-operator/crd/bases');
const Ajv = AjvModule.default;

function strict(s: any): any {
  if (Array.isArray(s)) return s.map(strict);
  if (!s || typeof s !== 'object') return s;
  const out: any = {};
  for (const [k, v] of Object.entries(s)) {
    if (k.startsWith('x-kubernetes-')) continue;
    out[k] = k === 'properties' ? Object.fromEntries(Object.entries(v as object).map(([n, p]) => [n, strict(p)])) : strict(v);
  }
  if (out.type === 'object' && out.properties && out.additionalProperties === undefined) out.additionalProperties = false;
  return out;
}

/** kind → openAPIV3Schema of the served version, from the CRDs in a folder's YAML files. */
export function crdSchemas(dir = CRD_DIR): Map<string, { group: string; version: string; schema: any }> {
  const out = new Map<string, { group: string; version: string; schema: any }>();
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.yaml'))) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, f), 'utf8'))) {
      const crd = doc.toJS();
      if (crd?.kind !== 'CustomResourceDefinition') continue;
      for (const v of crd.spec.versions) if (v.served) out.set(crd.spec.names.kind, { group: crd.spec.group, version: v.name, schema: v.schema.openAPIV3Schema });
    }
  }
  return out;
}

let validators: Map<string, { apiVersion: string; validate: any }> | undefined;

/** Errors for one object ([] when valid). */
export function crdErrors(obj: any): string[] {
  if (!validators) {
    const ajv = new Ajv({ allErrors: true, strict: true });
    ajv.addFormat('int32', { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
    ajv.addFormat('date-time', true);
    validators = new Map([...crdSchemas()].map(([kind, c]) => [kind, { apiVersion: `${c.group}/${c.version}`, validate: ajv.compile(strict(c.schema)) }]));
  }
  const v = validators.get(obj?.kind);
  if (!v) return [`no CRD for kind ${obj?.kind}`];
  if (obj.apiVersion !== v.apiVersion) return [`apiVersion ${obj.apiVersion} is not ${v.apiVersion}`];
  if (!obj.metadata?.name) return ['metadata.name is missing'];
  return v.validate(obj) ? [] : v.validate.errors.map((e: any) => `${e.instancePath || '/'} ${e.message}${e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : ''}`);
}
