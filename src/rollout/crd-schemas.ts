/**
 * The openAPIV3Schema of the Kairos operator CRDs NodeOp and NodeOpUpgrade (operator.kairos.io/v1alpha1)
 * as released upstream: kairos-io/kairos-operator v0.1.3 (commit ba610eee8760bac72089b5b88806c6f7f97be916),
 * config/crd/bases/, Apache-2.0. Copied from test/fixtures/kairos-operator/crd/bases/ (the test
 * rollout-validate checks they are equal) and carried in code so `kbundle rollout --validate`
 * works offline and in the node executable.
 */
export type JsonSchema = { [key: string]: unknown };

export const OPERATOR_CRD_RELEASE = 'kairos-operator v0.1.3';
export const NODEOP_SCHEMA: JsonSchema = {
  properties: {
    apiVersion: { type: 'string' },
    kind: { type: 'string' },
    metadata: { type: 'object' },
    spec: {
      properties: {
        backoffLimit: { format: 'int32', type: 'integer' },
        command: { items: { type: 'string' }, type: 'array' },
        concurrency: { default: 0, format: 'int32', minimum: 0, type: 'integer' },
        cordon: { default: false, type: 'boolean' },
        drainOptions: {
          properties: {
            deleteEmptyDirData: { default: false, type: 'boolean' },
            enabled: { default: false, type: 'boolean' },
            force: { default: false, type: 'boolean' },
            gracePeriodSeconds: { format: 'int32', type: 'integer' },
            ignoreDaemonSets: { default: true, type: 'boolean' },
            timeoutSeconds: { format: 'int32', type: 'integer' },
          },
          type: 'object',
        },
        hostMountPath: { default: '/host', type: 'string' },
        image: { type: 'string' },
        imagePullSecrets: { items: { properties: { name: { default: '', type: 'string' } }, type: 'object', 'x-kubernetes-map-type': 'atomic' }, type: 'array' },
        nodeSelector: {
          properties: {
            matchExpressions: {
              items: {
                properties: { key: { type: 'string' }, operator: { type: 'string' }, values: { items: { type: 'string' }, type: 'array', 'x-kubernetes-list-type': 'atomic' } },
                required: ['key', 'operator'],
                type: 'object',
              },
              type: 'array',
              'x-kubernetes-list-type': 'atomic',
            },
            matchLabels: { additionalProperties: { type: 'string' }, type: 'object' },
          },
          type: 'object',
          'x-kubernetes-map-type': 'atomic',
        },
        preflight: {
          properties: { activeDeadlineSeconds: { default: 120, format: 'int32', type: 'integer' }, command: { items: { type: 'string' }, type: 'array' }, image: { type: 'string' } },
          required: ['command'],
          type: 'object',
        },
        rebootOnSuccess: { default: false, type: 'boolean' },
        stopOnFailure: { default: false, type: 'boolean' },
        uncordonOnFailure: { default: false, type: 'boolean' },
      },
      required: ['command'],
      type: 'object',
    },
    status: {
      properties: {
        lastUpdated: { format: 'date-time', type: 'string' },
        nodeStatuses: {
          additionalProperties: {
            properties: { jobName: { type: 'string' }, lastUpdated: { format: 'date-time', type: 'string' }, message: { type: 'string' }, phase: { type: 'string' }, rebootStatus: { type: 'string' } },
            required: ['phase'],
            type: 'object',
          },
          type: 'object',
        },
        phase: { type: 'string' },
      },
      type: 'object',
    },
  },
  type: 'object',
};
export const NODEOPUPGRADE_SCHEMA: JsonSchema = {
  properties: {
    apiVersion: { type: 'string' },
    kind: { type: 'string' },
    metadata: { type: 'object' },
    spec: {
      properties: {
        concurrency: { default: 0, format: 'int32', minimum: 0, type: 'integer' },
        debug: { type: 'boolean' },
        excludePaths: { items: { type: 'string' }, type: 'array' },
        force: { type: 'boolean' },
        image: { type: 'string' },
        imagePullSecrets: { items: { properties: { name: { default: '', type: 'string' } }, type: 'object', 'x-kubernetes-map-type': 'atomic' }, type: 'array' },
        nodeSelector: {
          properties: {
            matchExpressions: {
              items: {
                properties: { key: { type: 'string' }, operator: { type: 'string' }, values: { items: { type: 'string' }, type: 'array', 'x-kubernetes-list-type': 'atomic' } },
                required: ['key', 'operator'],
                type: 'object',
              },
              type: 'array',
              'x-kubernetes-list-type': 'atomic',
            },
            matchLabels: { additionalProperties: { type: 'string' }, type: 'object' },
          },
          type: 'object',
          'x-kubernetes-map-type': 'atomic',
        },
        stopOnFailure: { type: 'boolean' },
        uncordonOnFailure: { type: 'boolean' },
        upgradeActive: { type: 'boolean' },
        upgradeRecovery: { type: 'boolean' },
      },
      required: ['image'],
      type: 'object',
    },
    status: {
      properties: {
        lastUpdated: { format: 'date-time', type: 'string' },
        message: { type: 'string' },
        nodeOpName: { type: 'string' },
        nodeStatuses: {
          additionalProperties: {
            properties: { jobName: { type: 'string' }, lastUpdated: { format: 'date-time', type: 'string' }, message: { type: 'string' }, phase: { type: 'string' }, rebootStatus: { type: 'string' } },
            required: ['phase'],
            type: 'object',
          },
          type: 'object',
        },
        phase: { type: 'string' },
      },
      type: 'object',
    },
  },
  type: 'object',
};
