/**
 * Validate Kubernetes objects against the Kairos operator's released CRD schemas, offline, the
 * way an API server with strict field validation (kubectl's default) would: the structural
 * openAPIV3Schema with unknown fields refused, int32 ranges, plus what the schema leaves to Go
 * code but the operator needs (object names, label selector operators).
 */
import AjvModule from 'ajv';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { NODEOP_SCHEMA, NODEOPUPGRADE_SCHEMA, OPERATOR_CRD_RELEASE, type JsonSchema } from './crd-schemas.js';
import { checkLabelKey, checkLabelValue } from './selector.js';

export const OPERATOR_API_VERSION = 'operator.kairos.io/v1alpha1';
export const VALIDATED_KINDS = ['NodeOp', 'NodeOpUpgrade'] as const;

// ajv is CommonJS: its default export is the class under NodeNext module resolution.
const Ajv = AjvModule.default;

/**
 * A CRD schema as ajv should read it. Kubernetes structural schemas differ from JSON Schema:
 * unknown fields are not part of the object (strict field validation rejects them), so every
 * object with `properties` gets `additionalProperties: false` unless it preserves unknown fields;
 * `x-kubernetes-int-or-string` means integer or string; other `x-kubernetes-*` markers only
 * describe merges and are dropped.
 */
export function structural(schema: JsonSchema): JsonSchema {
  const out: JsonSchema = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k.startsWith('x-kubernetes-')) continue;
    if ((k === 'properties' || k === 'patternProperties') && v && typeof v === 'object') {
      out[k] = Object.fromEntries(Object.entries(v as Record<string, JsonSchema>).map(([name, s]) => [name, structural(s)]));
    } else if ((k === 'items' || k === 'additionalProperties' || k === 'not') && v && typeof v === 'object') {
      out[k] = structural(v as JsonSchema);
    } else if ((k === 'allOf' || k === 'anyOf' || k === 'oneOf') && Array.isArray(v)) {
      out[k] = (v as JsonSchema[]).map(structural);
    } else out[k] = v;
  }
  if (schema['x-kubernetes-int-or-string'] === true) {
    delete out.type;
    out.anyOf = [{ type: 'integer' }, { type: 'string' }];
  }
  if (out.properties && out.additionalProperties === undefined && schema['x-kubernetes-preserve-unknown-fields'] !== true) out.additionalProperties = false;
  return out;
}

const INT32 = { min: -(2 ** 31), max: 2 ** 31 - 1 };
let compiled: Map<string, ValidateFunction> | undefined;

function validators(): Map<string, ValidateFunction> {
  if (compiled) return compiled;
  const ajv = new Ajv({ allErrors: true, strict: true });
  ajv.addFormat('int32', { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= INT32.min && n <= INT32.max });
  ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isSafeInteger(n) });
  ajv.addFormat('date-time', /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/);
  compiled = new Map([
    ['NodeOp', ajv.compile(structural(NODEOP_SCHEMA))],
    ['NodeOpUpgrade', ajv.compile(structural(NODEOPUPGRADE_SCHEMA))],
  ]);
  return compiled;
}

function describeAjvError(e: ErrorObject): string {
  const where = e.instancePath || '/';
  if (e.keyword === 'additionalProperties') return `${where}: unknown field "${(e.params as { additionalProperty: string }).additionalProperty}"`;
  if (e.keyword === 'format') return `${where}: must be a ${(e.params as { format: string }).format}`;
  return `${where}: ${e.message ?? e.keyword}`;
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function metadataErrors(meta: unknown): string[] {
  if (!meta || typeof meta !== 'object') return ['/metadata: is required'];
  const m = meta as Record<string, unknown>;
  const errs: string[] = [];
  if (typeof m.name !== 'string' || !m.name) errs.push('/metadata/name: is required');
  else if (m.name.length > 253 || !DNS_SUBDOMAIN.test(m.name)) errs.push(`/metadata/name: "${m.name}" is not a DNS-1123 subdomain (lowercase letters, digits, "-" and ".", at most 253)`);
  if (m.namespace !== undefined && (typeof m.namespace !== 'string' || m.namespace.length > 63 || !DNS_LABEL.test(m.namespace)))
    errs.push(`/metadata/namespace: "${String(m.namespace)}" is not a DNS-1123 label`);
  for (const field of ['labels', 'annotations'] as const) {
    const map = m[field];
    if (map === undefined) continue;
    if (!map || typeof map !== 'object' || Array.isArray(map)) {
      errs.push(`/metadata/${field}: must be a map of strings`);
      continue;
    }
    for (const [k, v] of Object.entries(map)) {
      const keyErr = checkLabelKey(k);
      if (keyErr) errs.push(`/metadata/${field}/${k}: ${keyErr}`);
      if (typeof v !== 'string') errs.push(`/metadata/${field}/${k}: must be a string`);
      else if (field === 'labels') {
        const valErr = checkLabelValue(v);
        if (valErr) errs.push(`/metadata/labels/${k}: ${valErr}`);
      }
    }
  }
  return errs;
}

/** What metav1.LabelSelectorAsSelector would refuse (the operator would then select nothing). */
function selectorErrors(sel: unknown): string[] {
  if (!sel || typeof sel !== 'object') return [];
  const s = sel as { matchLabels?: Record<string, unknown>; matchExpressions?: { key?: unknown; operator?: unknown; values?: unknown }[] };
  const errs: string[] = [];
  for (const [k, v] of Object.entries(s.matchLabels ?? {})) {
    const e = checkLabelKey(k) ?? (typeof v === 'string' ? checkLabelValue(v) : 'must be a string');
    if (e) errs.push(`/spec/nodeSelector/matchLabels/${k}: ${e}`);
  }
  (s.matchExpressions ?? []).forEach((x, i) => {
    const where = `/spec/nodeSelector/matchExpressions/${i}`;
    if (typeof x.key === 'string') {
      const e = checkLabelKey(x.key);
      if (e) errs.push(`${where}/key: ${e}`);
    }
    const values = Array.isArray(x.values) ? (x.values as unknown[]) : [];
    if (x.operator === 'In' || x.operator === 'NotIn') {
      if (values.length === 0) errs.push(`${where}/values: ${x.operator} needs at least one value`);
      for (const v of values) {
        const e = typeof v === 'string' ? checkLabelValue(v) : 'must be a string';
        if (e) errs.push(`${where}/values: ${e}`);
      }
    } else if (x.operator === 'Exists' || x.operator === 'DoesNotExist') {
      if (values.length) errs.push(`${where}/values: ${x.operator} takes no values`);
    } else errs.push(`${where}/operator: "${String(x.operator)}" is not one of In, NotIn, Exists, DoesNotExist`);
  });
  return errs;
}

/** Problems with one object (empty when it would be accepted). */
export function validateObject(obj: unknown): string[] {
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return ['not a Kubernetes object (a map with apiVersion and kind)'];
  const o = obj as Record<string, unknown>;
  if (o.apiVersion !== OPERATOR_API_VERSION || !VALIDATED_KINDS.includes(o.kind as never)) {
    return [`${String(o.apiVersion)} ${String(o.kind)}: only ${OPERATOR_API_VERSION} ${VALIDATED_KINDS.join(' and ')} can be checked (${OPERATOR_CRD_RELEASE} CRDs)`];
  }
  const v = validators().get(o.kind as string)!;
  const errs = v(obj) ? [] : (v.errors ?? []).map(describeAjvError);
  return [...errs, ...metadataErrors(o.metadata), ...selectorErrors((o.spec as Record<string, unknown> | undefined)?.nodeSelector)];
}

export interface ObjectProblems {
  index: number;
  name: string;
  problems: string[];
}

/** Check every object; returns only the ones with problems. */
export function validateObjects(objs: unknown[]): ObjectProblems[] {
  const out: ObjectProblems[] = [];
  objs.forEach((obj, index) => {
    const problems = validateObject(obj);
    if (!problems.length) return;
    const o = (obj ?? {}) as { kind?: unknown; metadata?: { name?: unknown } };
    out.push({ index, name: `${String(o.kind ?? '?')}/${String(o.metadata?.name ?? '?')}`, problems });
  });
  return out;
}
