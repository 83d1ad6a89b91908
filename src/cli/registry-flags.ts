import type { Command } from 'commander';
import { UserError } from '../errors.js';
import { resolveNetLimits } from '../net/deadlines.js';
import { RegistryClient, type RegistryClientOptions } from '../registry/client.js';
import type { CliIo } from './io.js';

/** Registry connection flags shared by every command that talks to a registry. */
export interface RegistryFlags {
  plainHttp?: boolean;
  insecureRegistry?: string[];
  caFile?: string;
  trustTokenRealm?: string[];
  connectTimeout?: string;
  responseTimeout?: string;
  speedLimit?: string;
  speedTime?: string;
  retries?: string;
  username?: string;
  passwordStdin?: boolean;
  platform?: string;
  json?: boolean;
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

/** Add the registry flags (and `--json`, unless the command defines its own). */
export function registryOptions(cmd: Command, opts: { json?: boolean } = {}): Command {
  const c = cmd
    .option('--plain-http', 'talk plain HTTP to every registry (loopback registries fall back to it by themselves)')
    .option('--insecure-registry <host>', 'allow plain HTTP and unverified TLS for this registry (repeatable; also KBUNDLE_INSECURE_REGISTRIES)', collect)
    .option('--ca-file <pem>', 'trust this CA bundle for registry TLS (default: $SSL_CERT_FILE)')
    .option('--trust-token-realm <host>', 'send the registry login to this token server on another host (repeatable; also KBUNDLE_TRUSTED_TOKEN_REALMS)', collect)
    .option('--connect-timeout <seconds>', 'give up connecting after this long (default 15; KBUNDLE_CONNECT_TIMEOUT)')
    .option('--response-timeout <seconds>', 'give up waiting for response headers after this long (default 60; KBUNDLE_RESPONSE_TIMEOUT)')
    .option('--speed-limit <bytes/s>', 'abort a transfer slower than this over --speed-time (default 1024; 0 = off; KBUNDLE_SPEED_LIMIT)')
    .option('--speed-time <seconds>', 'the window of --speed-limit (default 60; KBUNDLE_SPEED_TIME)')
    .option('--retries <n>', 'retries of a request after a reset, timeout, 429 or 5xx (default 4; KBUNDLE_RETRIES)')
    .option('--username <name>', 'registry user name (password from --password-stdin; or KBUNDLE_REGISTRY_USERNAME/KBUNDLE_REGISTRY_PASSWORD; or docker login)')
    .option('--password-stdin', 'read the registry password from standard input');
  return opts.json === false ? c : c.option('--json', 'print a JSON summary');
}

async function readStdin(stdin: CliIo['stdin']): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of stdin) parts.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(parts)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

export async function makeClient(o: RegistryFlags, io: CliIo): Promise<RegistryClient> {
  const limits = resolveNetLimits({ connectTimeoutMs: o.connectTimeout, headersTimeoutMs: o.responseTimeout, speedLimit: o.speedLimit, speedTimeMs: o.speedTime, attempts: o.retries }, io.env, {
    connectTimeoutMs: '--connect-timeout',
    headersTimeoutMs: '--response-timeout',
    speedLimit: '--speed-limit',
    speedTimeMs: '--speed-time',
    attempts: '--retries',
  });
  const opts: RegistryClientOptions = { plainHttp: o.plainHttp, insecureRegistries: o.insecureRegistry, caFile: o.caFile, trustedTokenRealms: o.trustTokenRealm, env: io.env, limits };
  if (o.passwordStdin) {
    if (!o.username) throw new UserError('--password-stdin needs --username');
    if (io.stdin.isTTY) throw new UserError('--password-stdin: standard input is a terminal', 'pipe the password in, e.g. echo "$PW" | kbundle push … --username me --password-stdin');
    opts.username = o.username;
    opts.password = await readStdin(io.stdin);
    if (!opts.password) throw new UserError('--password-stdin: standard input was empty');
  } else if (o.username) {
    throw new UserError('--username needs --password-stdin', 'pipe the password in: echo "$PW" | kbundle … --username me --password-stdin');
  }
  return new RegistryClient(opts);
}
