/**
 * .github/workflows/catalog.yml, run locally: the workflow is parsed, its `${{ }}` expressions
 * evaluated against a push event, and every `run:` step but `install` executed with bash as the
 * runner would (GITHUB_OUTPUT, GITHUB_PATH, RUNNER_TEMP, the GITHUB_* variables) in a git checkout
 * of the catalog. What needs GitHub is replaced by loopback stand-ins: registry:2 for ghcr.io, the
 * @sigstore/mock Fulcio + Rekor and its trusted root for the public-good Sigstore, and a small
 * server for the Actions OIDC token endpoint. The changed bundles must come out pushed, signed
 * keyless by the workflow's identity, attested, verified, and indexed; a second run adds nothing.
 */
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attachmentTag } from '../src/attach/tags.js';
import { copyCatalogOffline, type FixtureServer } from './helpers/catalog-copy.js';
import { cliShellCommand, kbundleAsync, REPO_ROOT } from './helpers/cli.js';
import { cleanupTempDirs, mustRun, run, tempDir } from './helpers/exec.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';
import { startSigstoreStack, type SigstoreStack } from './helpers/sigstore-stack.js';

const WORKFLOW = join(REPO_ROOT, '.github/workflows/catalog.yml');
const OWNER_REPO = 'kairos-io/kbundle';
const WORKFLOW_REF = `${OWNER_REPO}/.github/workflows/catalog.yml@refs/heads/main`;
const IDENTITY = `https://github.com/${WORKFLOW_REF}`;
const ISSUER = 'https://token.actions.githubusercontent.com';
const REQUEST_TOKEN = 'actions-request-token';

interface Step {
  id?: string;
  name?: string;
  uses?: string;
  run?: string;
  env?: Record<string, string>;
  with?: Record<string, unknown>;
}
interface Workflow {
  env: Record<string, string>;
  defaults?: { run?: { shell?: string } };
  jobs: Record<string, { permissions?: Record<string, string>; steps: Step[] }>;
}

let reg: RegistryHandle;
let stack: SigstoreStack;
let fixtures: FixtureServer;
let oidc: { url: string; requests: { url: string; auth?: string }[]; close(): Promise<void> };
let repo: string;
let before: string;
let head: string;

function git(args: string[]): string {
  return mustRun('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@example.invalid', '-c', 'commit.gpgsign=false', ...args]).trim();
}

/** The Actions ID-token endpoint: GET with the request token as bearer, `audience` in the query. */
async function startOidcStandIn(token: () => string): Promise<typeof oidc> {
  const requests: { url: string; auth?: string }[] = [];
  const server: Server = createServer((req, res) => {
    requests.push({ url: req.url ?? '', auth: req.headers.authorization });
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.headers.authorization !== `bearer ${REQUEST_TOKEN}` || url.searchParams.get('audience') !== 'sigstore') {
      res.writeHead(401).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ value: token() }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, requests, close: () => new Promise((r) => server.close(() => r())) };
}

/** `${{ a.b || c.d }}`: property paths and `||`, all this workflow uses; anything else fails the test. */
function evaluate(text: string, ctx: Record<string, unknown>): string {
  return text.replace(/\$\{\{\s*(.*?)\s*\}\}/g, (_, expr: string) => {
    for (const alt of expr.split('||').map((s) => s.trim())) {
      if (!/^[a-z_]+(\.[A-Za-z_]+)*$/.test(alt)) throw new Error(`unsupported expression in the workflow: ${expr}`);
      let v: unknown = ctx;
      for (const part of alt.split('.')) {
        if (v === null || typeof v !== 'object' || !(part in v)) throw new Error(`the test's context has no ${alt} (used by the workflow)`);
        v = (v as Record<string, unknown>)[part];
      }
      if (v) return String(v);
    }
    return '';
  });
}

/** Run a workflow script as `shell: bash` does (bash --noprofile --norc -eo pipefail), without blocking this process. */
function bash(script: string, env: NodeJS.ProcessEnv, cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const file = join(tempDir(), 'step.sh');
  writeFileSync(file, script);
  return new Promise((res, rej) => {
    const p = spawn('bash', ['--noprofile', '--norc', '-eo', 'pipefail', file], { cwd, env });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', rej);
    p.on('close', (code) => res({ code: code ?? -1, stdout, stderr }));
  });
}

interface WorkflowRun {
  steps: Record<string, { outputs: Record<string, string>; stdout: string }>;
  ran: string[];
  skipped: string[];
  runnerTemp: string;
}

/** Run the `catalog` job of the workflow for a push from `before` to `head`. */
async function runWorkflow(wf: Workflow, cacheDir: string): Promise<WorkflowRun> {
  const ctx = {
    github: {
      repository_owner: 'kairos-io',
      repository: OWNER_REPO,
      server_url: 'https://github.com',
      workflow_ref: WORKFLOW_REF,
      sha: head,
      ref: 'refs/heads/main',
      actor: 'kbundle-bot',
      event: { before },
    },
    inputs: { since: '' },
    secrets: { GITHUB_TOKEN: 'ghs_not-a-real-token' },
  };
  const runnerTemp = tempDir();
  const bin = join(runnerTemp, 'bin');
  mkdirSync(bin);
  // What the skipped install step puts on PATH: the kbundle command.
  writeFileSync(join(bin, 'kbundle'), `#!/bin/sh\nexec ${cliShellCommand()} "$@"\n`);
  chmodSync(join(bin, 'kbundle'), 0o755);
  const workflowEnv = Object.fromEntries(Object.entries(wf.env).map(([k, v]) => [k, evaluate(String(v), ctx)]));
  // The stand-ins for what only GitHub has.
  const substitutes = { REGISTRY: `${reg.host}/Kairos`, FULCIO_URL: stack.url, REKOR_URL: stack.url, KBUNDLE_TRUSTED_ROOT: stack.trustedRootFile };
  const runner = {
    CI: 'true',
    GITHUB_ACTIONS: 'true',
    GITHUB_SERVER_URL: ctx.github.server_url,
    GITHUB_REPOSITORY: OWNER_REPO,
    GITHUB_SHA: head,
    GITHUB_REF: ctx.github.ref,
    GITHUB_WORKFLOW_REF: WORKFLOW_REF,
    GITHUB_RUN_ID: '4242',
    GITHUB_RUN_ATTEMPT: '1',
    RUNNER_TEMP: runnerTemp,
    ACTIONS_ID_TOKEN_REQUEST_URL: `${oidc.url}/token?api-version=2.0`,
    ACTIONS_ID_TOKEN_REQUEST_TOKEN: REQUEST_TOKEN,
    KBUNDLE_CACHE_DIR: cacheDir,
  };
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('GITHUB_') && !k.startsWith('ACTIONS_') && !k.startsWith('KBUNDLE_') && k !== 'SIGSTORE_ID_TOKEN') base[k] = v;
  const out: WorkflowRun = { steps: {}, ran: [], skipped: [], runnerTemp };
  for (const step of wf.jobs.catalog!.steps) {
    const label = step.id ?? step.uses ?? step.name ?? '?';
    if (step.uses || step.id === 'install') {
      out.skipped.push(label);
      continue;
    }
    expect(step.run, `${label}: kbundle steps take values through env:, not \${{ }}`).not.toContain('${{');
    const files = { GITHUB_OUTPUT: join(runnerTemp, `${label}.output`), GITHUB_ENV: join(runnerTemp, `${label}.env`), GITHUB_PATH: join(runnerTemp, `${label}.path`) };
    for (const f of Object.values(files)) writeFileSync(f, '');
    const stepEnv = Object.fromEntries(Object.entries(step.env ?? {}).map(([k, v]) => [k, evaluate(String(v), ctx)]));
    const env = { ...base, ...runner, ...workflowEnv, ...substitutes, ...stepEnv, ...files, PATH: `${bin}:${process.env.PATH}` };
    const r = await bash(step.run!, env, repo);
    expect(r.code, `step ${label} failed:\n${r.stderr}\n${r.stdout}`).toBe(0);
    const outputs = Object.fromEntries(
      readFileSync(files.GITHUB_OUTPUT, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    out.steps[label] = { outputs, stdout: r.stdout };
    out.ran.push(label);
  }
  return out;
}

beforeAll(async () => {
  [reg, stack] = await Promise.all([startRegistry({ variant: 'open' }), startSigstoreStack()]);
  oidc = await startOidcStandIn(() => stack.token(IDENTITY, ISSUER));
  repo = tempDir();
  fixtures = await copyCatalogOffline(join(repo, 'bundles'));
  // What the skipped install step's `npm run sea` leaves in the (git-ignored) assets of bundles/kbundle.
  mkdirSync(join(repo, 'bundles/kbundle/assets'), { recursive: true });
  for (const arch of ['amd64', 'arm64']) writeFileSync(join(repo, `bundles/kbundle/assets/kbundle-linux-${arch}`), `stand-in for the ${arch} executable\n`);
  git(['init', '-q', '-b', 'main']);
  git(['remote', 'add', 'origin', `https://github.com/${OWNER_REPO}.git`]);
  git(['add', '-A']);
  git(['commit', '-q', '-m', 'catalog']);
  before = git(['rev-parse', 'HEAD']);
  // The push: two bundles change.
  const k9s = join(repo, 'bundles/k9s/bundle.yaml');
  writeFileSync(k9s, readFileSync(k9s, 'utf8').replace('"description": "', '"description": "Edited: '));
  const metallb = join(repo, 'bundles/metallb/bundle.yaml');
  writeFileSync(metallb, readFileSync(metallb, 'utf8').replace(/^description: /m, 'description: Edited '));
  git(['commit', '-q', '-am', 'edit k9s and metallb']);
  head = git(['rev-parse', 'HEAD']);
});
afterAll(async () => {
  await Promise.all([reg?.stop(), stack?.stop(), fixtures?.close(), oidc?.close()]);
  cleanupTempDirs();
});

describe('.github/workflows/catalog.yml', () => {
  const wf = parseYaml(readFileSync(WORKFLOW, 'utf8')) as Workflow;

  it('asks for what keyless signing and publishing need, and installs kbundle on PATH', () => {
    const job = wf.jobs.catalog!;
    expect(job.permissions).toMatchObject({ 'id-token': 'write', packages: 'write', contents: 'read' });
    expect(wf.defaults?.run?.shell).toBe('bash');
    const install = job.steps.find((s) => s.id === 'install')!;
    expect(install.run).toContain('npm ci');
    expect(install.run).toContain('npm run sea');
    expect(install.run).toContain('GITHUB_PATH');
    const uses = job.steps.filter((s) => s.uses).map((s) => s.uses!);
    for (const u of uses) expect(u).toMatch(/^actions\/[a-z-]+@v\d+$/);
    expect(uses).toEqual(expect.arrayContaining(['actions/checkout@v4', 'actions/upload-pages-artifact@v3']));
    expect(job.steps.find((s) => s.uses === 'actions/checkout@v4')!.with).toEqual({ 'fetch-depth': 0 });
    expect(wf.jobs.pages!.steps.map((s) => s.uses)).toEqual(['actions/deploy-pages@v4']);
  });

  it('builds the changed bundles, pushes, signs keyless, attests, verifies and indexes them; a second run adds nothing', async () => {
    const cacheDir = tempDir();
    const first = await runWorkflow(wf, cacheDir);
    expect(first.ran).toEqual(['build', 'publish', 'verify', 'index']);
    expect(first.skipped).toEqual(['actions/checkout@v4', 'actions/setup-node@v4', 'install', 'actions/cache@v4', 'actions/upload-pages-artifact@v3']);
    expect(first.steps.build!.outputs.built).toBe('k9s metallb');
    // The token came from the Actions endpoint, for the sigstore audience, with the request token.
    expect(oidc.requests).toHaveLength(1);
    expect(oidc.requests[0]!.url).toBe('/token?api-version=2.0&audience=sigstore');

    const ns = `${reg.host}/kairos`;
    const published = JSON.parse(readFileSync(join(first.runnerTemp, 'publish.json'), 'utf8')).bundles as { name: string; version: string; digest: string; status: string }[];
    expect(published.map((b) => `${b.name} ${b.status}`)).toEqual(['k9s pushed', 'metallb pushed']);
    // Only what changed went out.
    expect(run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ns}/kubectl:latest`]).code).not.toBe(0);

    const who = ['--certificate-identity', IDENTITY, '--certificate-oidc-issuer', ISSUER, '--trusted-root', stack.trustedRootFile];
    for (const b of published) {
      const ref = `${ns}/${b.name}@${b.digest}`;
      const v = await kbundleAsync(['verify', ref, ...who, '--json']);
      expect(v.code, v.stderr).toBe(0);
      expect(JSON.parse(v.stdout).signers.every((s: { kind: string; identity: string }) => s.kind === 'keyless' && s.identity === IDENTITY)).toBe(true);
      const a = await kbundleAsync(['verify-attestation', ref, '--type', 'slsaprovenance1', ...who, '--json']);
      expect(a.code, a.stderr).toBe(0);
      const p = JSON.parse(a.stdout).attestations[0].statement.predicate;
      expect(p.runDetails).toEqual({
        builder: { id: `https://github.com/${OWNER_REPO}/.github/workflows/catalog.yml`, version: { kbundle: '0.1.0' } },
        metadata: { invocationId: `https://github.com/${OWNER_REPO}/actions/runs/4242/attempts/1` },
      });
      expect(p.buildDefinition.externalParameters).toEqual({
        bundle: `bundles/${b.name}`,
        name: b.name,
        version: b.version,
        source: { repository: `https://github.com/${OWNER_REPO}`, commit: head, ref: 'refs/heads/main' },
      });
      // Another identity is not accepted.
      const other = await kbundleAsync([
        'verify-attestation',
        ref,
        '--type',
        'spdxjson',
        '--certificate-identity',
        IDENTITY.replace('main', 'evil'),
        '--certificate-oidc-issuer',
        ISSUER,
        '--trusted-root',
        stack.trustedRootFile,
      ]);
      expect(other.code).toBe(10);
    }
    // The node policy written for this workflow accepts what it published (registry and root substituted).
    const policy = join(tempDir(), 'policy.yaml');
    writeFileSync(
      policy,
      readFileSync(join(REPO_ROOT, 'signing/policies/catalog-workflow.yaml'), 'utf8')
        .replace('ghcr.io/kairos-io/bundles/**', `${ns}/**`)
        .replace('../trust-roots/public-good.json', stack.trustedRootFile),
    );
    for (const b of published) {
      const v = await kbundleAsync(['verify', `${ns}/${b.name}:${b.version}`, '--policy', policy]);
      expect(v.code, v.stderr).toBe(0);
    }
    // … and it does check the provenance: another builder id is refused.
    writeFileSync(policy, readFileSync(policy, 'utf8').replace('builderId: https://github.com/kairos-io/kbundle/', 'builderId: https://github.com/someone/else/'));
    const refused = await kbundleAsync(['verify', `${ns}/k9s:${published[0]!.version}`, '--policy', policy]);
    expect(refused.code).toBe(10);
    expect(refused.stderr).toContain('provenance builder id');
    const index = JSON.parse(readFileSync(join(repo, 'out/site/index.json'), 'utf8')) as { bundles: { name: string; digest?: string; reference?: string }[] };
    expect(index.bundles.find((b) => b.name === 'k9s')).toMatchObject({ digest: published[0]!.digest, reference: `${ns}/k9s:${published[0]!.version}` });

    // The same push again (the layout restored from the cache): nothing built, signed or attached.
    const att = () =>
      (JSON.parse(mustRun('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ns}/k9s:${attachmentTag(published[0]!.digest, 'att')}`])) as { layers: unknown[] }).layers.length;
    const atts = att();
    expect(atts).toBe(3);
    const second = await runWorkflow(wf, cacheDir);
    expect(second.steps.build!.outputs.built).toBe('');
    const again = JSON.parse(readFileSync(join(second.runnerTemp, 'publish.json'), 'utf8')).bundles as { status: string; signature?: string; attestations: { added: boolean }[] }[];
    expect(again.map((b) => b.status)).toEqual(['unchanged', 'unchanged']);
    expect(again.every((b) => !b.signature && b.attestations.every((a) => !a.added))).toBe(true);
    expect(att()).toBe(atts);
  });
});
