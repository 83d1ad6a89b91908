import type { Command } from 'commander';
import { UserError } from '../errors.js';
import { RegistryClient, type RegistryClientOptions } from '../registry/client.js';
import type { CliIo } from './io.js';

/** Registry connection flags shared by every command that talks to a registry. */
export interface RegistryFlags {
  plainHttp?: boolean;
  insecureRegistry?: string[];
  caFile?: string;
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
  const opts: RegistryClientOptions = { plainHttp: o.plainHttp, insecureRegistries: o.insecureRegistry, caFile: o.caFile, env: io.env };
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
