import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { DOCKER_HUB } from './reference.js';

/** What a registry login resolves to. Never print `password` or `identityToken`. */
export interface Credentials {
  username?: string;
  password?: string;
  /** OAuth2 refresh token (docker config `identitytoken`, or a helper answering Username `<token>`). */
  identityToken?: string;
  /** Where they came from, for messages: `--username`, `KBUNDLE_REGISTRY_USERNAME`, `~/.docker/config.json`, `docker-credential-pass`. */
  source: string;
}

export interface CredentialOptions {
  /** From `--username` / `--password-stdin`; applies to every registry of the command. */
  username?: string;
  password?: string;
  env?: NodeJS.ProcessEnv;
  /** Override the docker config directory (default `$DOCKER_CONFIG` or `~/.docker`). */
  dockerConfigDir?: string;
}

interface DockerConfigFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

const DOCKER_HUB_CONFIG_KEY = 'https://index.docker.io/v1/';

/** `https://host/v1/` → `host`: how docker matches the keys of `auths`. */
function configKeyHost(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '');
}

function configKeysFor(registry: string): string[] {
  return registry === DOCKER_HUB ? [DOCKER_HUB_CONFIG_KEY, 'docker.io', 'index.docker.io', 'registry-1.docker.io'] : [registry];
}

async function readDockerConfig(dir: string): Promise<{ file: string; config: DockerConfigFile } | undefined> {
  const file = join(dir, 'config.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new UserError(`${file}: cannot read (${(e as Error).message})`);
  }
  try {
    return { file, config: JSON.parse(text) as DockerConfigFile };
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`, 'fix or move the docker config file');
  }
}

/** Run `docker-credential-<helper> get` with the server URL on stdin (docker-credential-helpers protocol). */
export async function runCredentialHelper(helper: string, serverUrl: string, env: NodeJS.ProcessEnv): Promise<Credentials | undefined> {
  const bin = `docker-credential-${helper}`;
  // Loaded here, not at import: every registry command imports this module, few run a helper,
  // and node:child_process is one of the costlier built-ins to load at start-up.
  const { execFile } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    const child = execFile(bin, ['get'], { env, timeout: 30_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const out = `${stdout}${stderr}`;
        // Helpers answer "credentials not found in native keychain" with a non-zero exit.
        if (/not found/i.test(out)) return resolve(undefined);
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          return reject(new UserError(`credential helper ${bin} is configured for ${serverUrl} but not installed`, 'install it or remove it from credHelpers/credsStore in your docker config'));
        }
        return reject(new UserError(`credential helper ${bin} failed for ${serverUrl}: ${out.trim().split('\n')[0] ?? err.message}`));
      }
      try {
        const r = JSON.parse(stdout) as { Username?: string; Secret?: string };
        if (!r.Secret) return resolve(undefined);
        if (r.Username === '<token>') return resolve({ identityToken: r.Secret, source: bin });
        resolve({ username: r.Username, password: r.Secret, source: bin });
      } catch {
        reject(new UserError(`credential helper ${bin} printed something that is not JSON`));
      }
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(serverUrl);
  });
}

/**
 * Credentials for one registry, in this order: flags, `KBUNDLE_REGISTRY_USERNAME`/`KBUNDLE_REGISTRY_PASSWORD`,
 * docker config `credHelpers[host]`, `auths[host]`, `credsStore`. Undefined = anonymous.
 */
export async function resolveCredentials(registry: string, opts: CredentialOptions = {}): Promise<Credentials | undefined> {
  const env = opts.env ?? process.env;
  if (opts.username !== undefined || opts.password !== undefined) {
    if (!opts.username || opts.password === undefined) throw new UserError('--username and --password-stdin go together', 'pass both, e.g. echo "$PW" | kbundle push --username me --password-stdin …');
    return { username: opts.username, password: opts.password, source: '--username' };
  }
  if (env.KBUNDLE_REGISTRY_USERNAME || env.KBUNDLE_REGISTRY_PASSWORD) {
    if (!env.KBUNDLE_REGISTRY_USERNAME || env.KBUNDLE_REGISTRY_PASSWORD === undefined)
      throw new UserError('KBUNDLE_REGISTRY_USERNAME and KBUNDLE_REGISTRY_PASSWORD go together', 'set both, or neither');
    return { username: env.KBUNDLE_REGISTRY_USERNAME, password: env.KBUNDLE_REGISTRY_PASSWORD, source: 'KBUNDLE_REGISTRY_USERNAME' };
  }
  const dir = opts.dockerConfigDir ?? env.DOCKER_CONFIG ?? join(env.HOME ?? homedir(), '.docker');
  const loaded = await readDockerConfig(dir);
  if (!loaded) return undefined;
  const { file, config } = loaded;
  const keys = configKeysFor(registry);
  const serverUrl = registry === DOCKER_HUB ? DOCKER_HUB_CONFIG_KEY : registry;

  for (const k of keys) {
    const helper = config.credHelpers?.[k];
    if (helper) return runCredentialHelper(helper, serverUrl, env);
  }
  const wanted = new Set(keys.map(configKeyHost));
  for (const [key, entry] of Object.entries(config.auths ?? {})) {
    if (!wanted.has(configKeyHost(key))) continue;
    if (entry.identitytoken) return { identityToken: entry.identitytoken, username: entry.username, source: file };
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const i = decoded.indexOf(':');
      if (i <= 0) throw new UserError(`${file}: auths["${key}"].auth is not base64 of user:password`, 'log in again to rewrite it');
      return { username: decoded.slice(0, i), password: decoded.slice(i + 1), source: file };
    }
    if (entry.username && entry.password !== undefined) return { username: entry.username, password: entry.password, source: file };
    // An empty entry (written by `docker login` when a credsStore holds the secret): fall through.
  }
  if (config.credsStore) return runCredentialHelper(config.credsStore, serverUrl, env);
  return undefined;
}
