/**
 * Where keyless signing gets its OIDC identity token, in cosign's order:
 *   1. `--identity-token <jwt|file>`;
 *   2. `SIGSTORE_ID_TOKEN` (cosign's env provider; `KBUNDLE_IDENTITY_TOKEN` as kbundle's own name);
 *   3. GitHub Actions: GET $ACTIONS_ID_TOKEN_REQUEST_URL with `audience=sigstore`, authorised by
 *      `bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`; the answer is `{"value":"<jwt>"}` (cosign
 *      pkg/providers/github, the runner's OIDC endpoint). The workflow needs `permissions: id-token: write`.
 *
 * The request token is a credential: it is only sent over https, or to a loopback address (tests).
 */
import { readFileSync, statSync } from 'node:fs';
import type { Dispatcher } from 'undici';
import { codeForHttpStatus, errorMessage, KbError, UserError } from '../errors.js';
import { readAllCapped } from '../oci/digest.js';
import { undici } from '../registry/undici-lazy.js';

export const SIGSTORE_AUDIENCE = 'sigstore';
const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const MAX_TOKEN_RESPONSE = 64 * 1024;
const MAX_TOKEN_FILE = 64 * 1024;

export interface IdentityToken {
  token: string;
  /** Where it came from, for messages: `--identity-token`, `SIGSTORE_ID_TOKEN`, `GitHub Actions`. */
  source: string;
}

function tokenFromValue(v: string, what: string): string {
  const s = v.trim();
  if (JWT.test(s)) return s;
  try {
    const st = statSync(s);
    if (st.isFile()) {
      if (st.size > MAX_TOKEN_FILE) throw new UserError(`${what}: ${s} is too large for an identity token file`);
      const text = readFileSync(s, 'utf8').trim();
      if (JWT.test(text)) return text;
      throw new UserError(`${what}: ${s} does not hold a JWT`);
    }
  } catch (e) {
    if (e instanceof KbError) throw e;
    /* not a file */
  }
  throw new UserError(`${what}: the identity token is neither a JWT nor a readable file`);
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** The GitHub Actions OIDC endpoint, as cosign asks it. */
export async function githubActionsToken(env: NodeJS.ProcessEnv, opts: { timeoutMs?: number; audience?: string } = {}): Promise<string> {
  const rawUrl = env.ACTIONS_ID_TOKEN_REQUEST_URL ?? '';
  const bearer = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN ?? '';
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    throw new UserError(`ACTIONS_ID_TOKEN_REQUEST_URL is not a URL`);
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopback(url.hostname))) {
    throw new UserError(`ACTIONS_ID_TOKEN_REQUEST_URL must be an https URL (it receives ACTIONS_ID_TOKEN_REQUEST_TOKEN)`);
  }
  url.searchParams.set('audience', opts.audience ?? SIGSTORE_AUDIENCE);
  const timeout = opts.timeoutMs ?? 30_000;
  const http = await undici();
  const agent: Dispatcher = new http.Agent({ connect: { timeout: Math.min(timeout, 15_000) }, headersTimeout: timeout, bodyTimeout: timeout });
  const where = `${url.origin}${url.pathname}`;
  try {
    let res: Dispatcher.ResponseData;
    try {
      res = await http.request(url, { method: 'GET', headers: { accept: 'application/json', authorization: `bearer ${bearer}` }, dispatcher: agent });
    } catch (e) {
      throw new KbError('TRANSIENT', `GitHub Actions OIDC token: cannot reach ${where} (${errorMessage(e)})`, { cause: e });
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new KbError(codeForHttpStatus(res.statusCode), `GitHub Actions OIDC token: ${where} answered HTTP ${res.statusCode}`, {
        hint: res.statusCode === 401 || res.statusCode === 403 ? 'the workflow (or job) needs `permissions: id-token: write`' : undefined,
      });
    }
    let text: string;
    try {
      text = (await readAllCapped(res.body, MAX_TOKEN_RESPONSE, `GitHub Actions OIDC token from ${where}`)).toString('utf8');
    } catch (e) {
      if (e instanceof KbError) throw e;
      throw new KbError('TRANSIENT', `GitHub Actions OIDC token: ${where} broke off its answer (${errorMessage(e)})`, { cause: e });
    }
    let body: { value?: unknown };
    try {
      body = JSON.parse(text) as { value?: unknown };
    } catch {
      throw new KbError('INVALID_INPUT', `GitHub Actions OIDC token: ${where} answered something that is not JSON`);
    }
    if (typeof body?.value !== 'string' || !JWT.test(body.value)) throw new KbError('INVALID_INPUT', `GitHub Actions OIDC token: ${where} answered without a JWT in "value"`);
    return body.value;
  } finally {
    await agent.destroy();
  }
}

/** The identity token for keyless signing, or undefined when none of the sources has one. */
export async function resolveIdentityToken(flag: string | undefined, env: NodeJS.ProcessEnv, opts: { timeoutMs?: number } = {}): Promise<IdentityToken | undefined> {
  if (flag?.trim()) return { token: tokenFromValue(flag, '--identity-token'), source: '--identity-token' };
  for (const name of ['SIGSTORE_ID_TOKEN', 'KBUNDLE_IDENTITY_TOKEN']) {
    const v = env[name]?.trim();
    if (v) return { token: tokenFromValue(v, name), source: name };
  }
  if (env.ACTIONS_ID_TOKEN_REQUEST_URL && env.ACTIONS_ID_TOKEN_REQUEST_TOKEN) return { token: await githubActionsToken(env, opts), source: 'GitHub Actions' };
  return undefined;
}
