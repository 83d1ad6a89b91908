/**
 * Real local registries for tests: Debian's `docker-registry` (distribution v2.8.2) on 127.0.0.1.
 *
 *   const reg = await startRegistry({ variant: 'open' });          // plain HTTP, no auth
 *   const reg = await startRegistry({ variant: 'htpasswd' });      // TLS + Basic (bcrypt htpasswd)
 *   const reg = await startRegistry({ variant: 'token' });         // Bearer via ./token-server.ts
 *   ...
 *   await reg.stop();
 *
 * Config templates live in registry-test/configs/<variant>.yml; this module fills their @PLACEHOLDERS@,
 * generates the TLS material (CA + server cert for IP:127.0.0.1/DNS:localhost) and the htpasswd file,
 * spawns the registry, waits for `/v2/` to answer (200 or 401) and tears everything down on stop()
 * — or when the test process exits, even abruptly: the registry runs under a tiny sh watchdog that
 * kills it when our end of its stdin pipe closes.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { freePort } from '../../bench/registry.js';
import { startTokenServer, type TokenServer, type TokenServerOptions } from './token-server.js';

const execFileP = promisify(execFile);

export const REGISTRY_BIN = process.env.KBUNDLE_TEST_REGISTRY_BIN ?? '/usr/bin/docker-registry';
export const CONFIG_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../registry-test/configs');

export type RegistryVariant = 'open' | 'htpasswd' | 'token';

export interface StartRegistryOptions {
  variant: RegistryVariant;
  /** htpasswd/token users (name → password). Default: one user `kbundle` with a random password. */
  users?: Record<string, string>;
  /** Serve HTTPS (token: the token endpoint too). Default: true for `htpasswd`, false for `open` and `token`. */
  tls?: boolean;
  /** token: let anonymous clients pull. Default false. */
  anonymousPull?: boolean;
  /** token: lifetime of issued tokens in seconds. Default 300. */
  tokenTtlSeconds?: number;
  /** token: custom ACL passed to the token server (see TokenServerOptions.authorize). */
  authorize?: TokenServerOptions['authorize'];
  /** Use this storage directory (kept on stop) instead of a fresh temporary one (removed on stop). */
  storageDir?: string;
  /** Last chance to edit the parsed config object before it is written. */
  mutateConfig?: (config: Record<string, any>) => void;
  /** bcrypt cost for htpasswd entries (4..31). Default 5: the registry checks it on every request. */
  bcryptCost?: number;
  /** How long to wait for /v2/ to answer. Default 20 s. */
  readyTimeoutMs?: number;
}

export interface RegistryHandle {
  variant: RegistryVariant;
  /** `127.0.0.1:PORT` — the reference host, e.g. `${host}/repo:tag`. */
  host: string;
  port: number;
  /** `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT` */
  url: string;
  tls: boolean;
  /** CA certificate (PEM file / contents) that signed the server certificate, when tls. */
  caFile?: string;
  caPem?: string;
  /** A directory holding only `ca.crt`: pass it to skopeo as --cert-dir / --src-cert-dir / --dest-cert-dir. */
  certDir?: string;
  /** All TLS material (server cert/key too, e.g. to let a fault proxy serve TLS the same CA vouches for). */
  pki?: TestPki;
  /** First configured user (htpasswd/token). */
  username?: string;
  password?: string;
  users: Record<string, string>;
  /** token variant: the running token server (requests, failNext, issue…). */
  tokenServer?: TokenServer;
  storageDir: string;
  configFile: string;
  /** Per-registry scratch directory (config, htpasswd, pid file). */
  dir: string;
  /** Registry process id (changes on restart). */
  readonly pid: number;
  /** Last ~64 KiB of the registry's stdout+stderr. */
  logs(): string;
  /** Kill and start again on the same port with the same config and storage. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// bcrypt ($2y$), for htpasswd files: registry 2.8 accepts only bcrypt entries and neither
// apache2-utils (htpasswd) nor a bcrypt module is guaranteed here. The Blowfish initial state is
// the hex expansion of pi, computed once with BigInt (Machin's formula) instead of a constant table.
// ---------------------------------------------------------------------------------------------

const BF_WORDS = 18 + 4 * 256;
let bfInitial: Int32Array | undefined;

function blowfishInitialState(): Int32Array {
  if (bfInitial) return bfInitial;
  const bits = 32 * BF_WORDS;
  const guard = 64;
  const one = 1n << BigInt(bits + guard);
  const arctanInv = (x: bigint): bigint => {
    const x2 = x * x;
    let term = one / x;
    let sum = term;
    let neg = true;
    for (let n = 3n; term !== 0n; n += 2n) {
      term /= x2;
      sum += neg ? -(term / n) : term / n;
      neg = !neg;
    }
    return sum;
  };
  const pi = 16n * arctanInv(5n) - 4n * arctanInv(239n);
  let frac = (pi >> BigInt(guard)) & ((1n << BigInt(bits)) - 1n);
  const out = new Int32Array(BF_WORDS);
  for (let i = BF_WORDS - 1; i >= 0; i--) {
    out[i] = Number(frac & 0xffffffffn) | 0;
    frac >>= 32n;
  }
  // Spot-check against the published Blowfish constants: P[0], S0[0], S3[255].
  if (out[0] !== (0x243f6a88 | 0) || out[18] !== (0xd1310ba6 | 0) || out[BF_WORDS - 1] !== (0x3ac372e6 | 0)) {
    throw new Error('bcrypt: pi expansion does not match the Blowfish constants');
  }
  bfInitial = out;
  return out;
}

const BCRYPT_B64 = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function bcryptB64Encode(d: Uint8Array, len: number): string {
  let out = '';
  let off = 0;
  const at = (i: number): number => d[i] ?? 0;
  const ch = (v: number): string => BCRYPT_B64.charAt(v & 0x3f);
  while (off < len) {
    let c1 = at(off++);
    out += ch(c1 >> 2);
    c1 = (c1 & 0x03) << 4;
    if (off >= len) {
      out += ch(c1);
      break;
    }
    let c2 = at(off++);
    c1 |= (c2 >> 4) & 0x0f;
    out += ch(c1);
    c1 = (c2 & 0x0f) << 2;
    if (off >= len) {
      out += ch(c1);
      break;
    }
    c2 = at(off++);
    c1 |= (c2 >> 6) & 0x03;
    out += ch(c1);
    out += ch(c2);
  }
  return out;
}

function bcryptB64Decode(s: string, maxLen: number): Uint8Array {
  const out: number[] = [];
  const v = (i: number): number => {
    const x = BCRYPT_B64.indexOf(s.charAt(i));
    if (x < 0) throw new Error('bcrypt: invalid salt character');
    return x;
  };
  let off = 0;
  while (off < s.length - 1 && out.length < maxLen) {
    const c1 = v(off++);
    const c2 = v(off++);
    out.push(((c1 << 2) | ((c2 & 0x30) >> 4)) & 0xff);
    if (out.length >= maxLen || off >= s.length) break;
    const c3 = v(off++);
    out.push((((c2 & 0x0f) << 4) | ((c3 & 0x3c) >> 2)) & 0xff);
    if (out.length >= maxLen || off >= s.length) break;
    const c4 = v(off++);
    out.push((((c3 & 0x03) << 6) | c4) & 0xff);
  }
  return Uint8Array.from(out);
}

/**
 * bcrypt hash in `$2y$NN$<22 salt><31 hash>` form (what `htpasswd -B` writes).
 * `salt` is 16 raw bytes or the 22-character bcrypt-base64 form; random when omitted.
 */
export function bcryptHash(password: string, cost = 5, salt?: Uint8Array | string): string {
  if (!Number.isInteger(cost) || cost < 4 || cost > 31) throw new Error('bcrypt: cost must be 4..31');
  const saltBytes = typeof salt === 'string' ? bcryptB64Decode(salt, 16) : (salt ?? randomBytes(16));
  if (saltBytes.length !== 16) throw new Error('bcrypt: salt must be 16 bytes');
  const keyBytes = Buffer.concat([Buffer.from(password, 'utf8'), Buffer.from([0])]).subarray(0, 72);

  const init = blowfishInitialState();
  const P = init.slice(0, 18);
  const S = init.slice(18);
  const lr = new Int32Array(2);

  const encipher = (buf: Int32Array, off: number): void => {
    let l = buf[off]! ^ P[0]!;
    let r = buf[off + 1]!;
    for (let i = 0; i <= 14;) {
      let n = S[(l >>> 24) & 0xff]!;
      n = (n + S[0x100 | ((l >>> 16) & 0xff)]!) | 0;
      n ^= S[0x200 | ((l >>> 8) & 0xff)]!;
      n = (n + S[0x300 | (l & 0xff)]!) | 0;
      r ^= n ^ P[++i]!;
      n = S[(r >>> 24) & 0xff]!;
      n = (n + S[0x100 | ((r >>> 16) & 0xff)]!) | 0;
      n ^= S[0x200 | ((r >>> 8) & 0xff)]!;
      n = (n + S[0x300 | (r & 0xff)]!) | 0;
      l ^= n ^ P[++i]!;
    }
    buf[off] = r ^ P[17]!;
    buf[off + 1] = l;
  };
  const streamToWord = (data: Uint8Array, pos: { i: number }): number => {
    let w = 0;
    for (let k = 0; k < 4; k++) {
      w = (w << 8) | (data[pos.i] ?? 0);
      pos.i = (pos.i + 1) % data.length;
    }
    return w | 0;
  };
  const expand = (data: Uint8Array | undefined, key: Uint8Array): void => {
    const kp = { i: 0 };
    const dp = { i: 0 };
    for (let i = 0; i < 18; i++) P[i] = P[i]! ^ streamToWord(key, kp);
    lr[0] = 0;
    lr[1] = 0;
    for (let i = 0; i < 18; i += 2) {
      if (data) {
        lr[0] = lr[0]! ^ streamToWord(data, dp);
        lr[1] = lr[1]! ^ streamToWord(data, dp);
      }
      encipher(lr, 0);
      P[i] = lr[0]!;
      P[i + 1] = lr[1]!;
    }
    for (let i = 0; i < 1024; i += 2) {
      if (data) {
        lr[0] = lr[0]! ^ streamToWord(data, dp);
        lr[1] = lr[1]! ^ streamToWord(data, dp);
      }
      encipher(lr, 0);
      S[i] = lr[0]!;
      S[i + 1] = lr[1]!;
    }
  };

  expand(saltBytes, keyBytes);
  const rounds = 2 ** cost;
  for (let r = 0; r < rounds; r++) {
    expand(undefined, keyBytes);
    expand(undefined, saltBytes);
  }
  // "OrpheanBeholderScryDoubt"
  const cdata = Int32Array.from([0x4f727068, 0x65616e42, 0x65686f6c, 0x64657253, 0x63727944, 0x6f756274]);
  for (let i = 0; i < 64; i++) for (let j = 0; j < 3; j++) encipher(cdata, j * 2);
  const out = Buffer.alloc(24);
  for (let j = 0; j < 6; j++) out.writeInt32BE(cdata[j]!, j * 4);
  return `$2y$${String(cost).padStart(2, '0')}$${bcryptB64Encode(saltBytes, 16)}${bcryptB64Encode(out, 23)}`;
}

/** Write an htpasswd file (bcrypt entries) for `users`. */
export function writeHtpasswd(file: string, users: Record<string, string>, cost = 5): void {
  const lines = Object.entries(users).map(([u, p]) => {
    if (u.includes(':') || /\s/.test(u)) throw new Error(`htpasswd: invalid user name ${JSON.stringify(u)}`);
    return `${u}:${bcryptHash(p, cost)}`;
  });
  writeFileSync(file, lines.join('\n') + '\n', { mode: 0o600 });
}

// ---------------------------------------------------------------------------------------------
// TLS material: a CA and a server certificate (IP:127.0.0.1, DNS:localhost), made per registry.
// ---------------------------------------------------------------------------------------------

export interface TestPki {
  dir: string;
  caFile: string;
  caPem: string;
  caKeyFile: string;
  certFile: string;
  certPem: string;
  keyFile: string;
  keyPem: string;
  /** Directory containing only `ca.crt` (for skopeo/containers-image --cert-dir). */
  certDir: string;
}

const tempDirs = new Set<string>();

function makeTempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

/** Create a CA and a CA-signed server certificate for 127.0.0.1/localhost with openssl. */
export async function createTestPki(dir: string = makeTempDir('kbundle-pki-')): Promise<TestPki> {
  mkdirSync(dir, { recursive: true });
  const p = (f: string): string => join(dir, f);
  writeFileSync(
    p('openssl.cnf'),
    [
      '[req]',
      'distinguished_name = dn',
      '[dn]',
      '[ca_ext]',
      'basicConstraints = critical,CA:TRUE',
      'keyUsage = critical,keyCertSign,cRLSign',
      'subjectKeyIdentifier = hash',
      '[server_ext]',
      'basicConstraints = critical,CA:FALSE',
      'keyUsage = critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage = serverAuth',
      'subjectAltName = IP:127.0.0.1,DNS:localhost',
      'subjectKeyIdentifier = hash',
      'authorityKeyIdentifier = keyid',
      '',
    ].join('\n'),
  );
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await execFileP('openssl', ['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '3', '-subj', '/CN=kbundle test CA', '-config', p('openssl.cnf'), '-extensions', 'ca_ext']);
  await execFileP('openssl', ['req', '-new', ...ec, '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=localhost', '-config', p('openssl.cnf')]);
  await execFileP('openssl', [
    'x509',
    '-req',
    '-in',
    p('server.csr'),
    '-CA',
    p('ca.crt'),
    '-CAkey',
    p('ca.key'),
    '-set_serial',
    `0x${randomBytes(8).toString('hex')}`,
    '-days',
    '3',
    '-extfile',
    p('openssl.cnf'),
    '-extensions',
    'server_ext',
    '-out',
    p('server.crt'),
  ]);
  const certDir = p('certs.d');
  mkdirSync(certDir, { recursive: true });
  const caPem = readFileSync(p('ca.crt'), 'utf8');
  writeFileSync(join(certDir, 'ca.crt'), caPem);
  return {
    dir,
    caFile: p('ca.crt'),
    caPem,
    caKeyFile: p('ca.key'),
    certFile: p('server.crt'),
    certPem: readFileSync(p('server.crt'), 'utf8'),
    keyFile: p('server.key'),
    keyPem: readFileSync(p('server.key'), 'utf8'),
    certDir,
  };
}

// ---------------------------------------------------------------------------------------------
// Process management
// ---------------------------------------------------------------------------------------------

// A free loopback TCP port (bound then released; callers retry on the rare race): the benches' one.
export { freePort };

// Runs the registry in the background and kills it when stdin reaches EOF — that is, when stop()
// ends the pipe or the test process dies, however abruptly. Exits with the registry's status.
// The registry logs to a file, not to a pipe: a test blocked in spawnSync would stop draining a
// pipe, the registry would block writing its (chatty) 404 log lines, and requests would hang.
const WATCHDOG = `
exec 3<&0
"$1" serve "$2" </dev/null >>"$3.log" 2>&1 &
p=$!
echo "$p" > "$3"
( cat <&3 >/dev/null 2>&1; kill -KILL "$p" 2>/dev/null ) >/dev/null 2>&1 &
w=$!
exec 3<&-
wait "$p"; rc=$?
kill "$w" 2>/dev/null
exit "$rc"
`;

interface Running {
  child: ChildProcess;
  pid: number;
  exited: Promise<number | null>;
}

const live = new Set<Running>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const r of live) {
      try {
        process.kill(r.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      try {
        r.child.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const d of tempDirs) {
      try {
        rmSync(d, { recursive: true, force: true });
      } catch {
        /* best effort */
      }
    }
  });
}

function spawnRegistry(configFile: string, pidFile: string, onOutput: (s: string) => void): Running {
  rmSync(pidFile, { force: true });
  const child = spawn('/bin/sh', ['-c', WATCHDOG, 'kbundle-registry-watchdog', REGISTRY_BIN, configFile, pidFile], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (b: Buffer) => onOutput(b.toString('utf8')));
  child.stderr?.on('data', (b: Buffer) => onOutput(b.toString('utf8')));
  child.stdin?.on('error', () => {
    /* EPIPE when the watchdog is already gone */
  });
  const exited = new Promise<number | null>((res) => {
    child.once('exit', (code) => {
      child.stdin?.destroy();
      res(code);
    });
  });
  const running: Running = { child, pid: -1, exited };
  live.add(running);
  void exited.then(() => live.delete(running));
  return running;
}

async function readPid(pidFile: string, running: Running, deadline: number): Promise<number> {
  for (;;) {
    if (existsSync(pidFile)) {
      const n = Number(readFileSync(pidFile, 'utf8').trim());
      if (Number.isInteger(n) && n > 0) return n;
    }
    if (running.child.exitCode !== null || Date.now() > deadline) return -1;
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function stopRunning(running: Running): Promise<void> {
  if (running.child.exitCode !== null || running.child.signalCode !== null) return;
  running.child.stdin?.end(); // watchdog kills the registry
  const timer = setTimeout(() => {
    try {
      if (running.pid > 0) process.kill(running.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    running.child.kill('SIGKILL');
  }, 5000);
  await running.exited;
  clearTimeout(timer);
}

/** One GET of `${url}/v2/`; resolves with the status code or rejects on connection errors. */
function probe(url: string, ca?: string): Promise<number> {
  return new Promise((resolveStatus, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.get(`${url}/v2/`, { ca, agent: false, timeout: 2000 }, (res) => {
      res.resume();
      resolveStatus(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('probe timeout')));
    req.on('error', reject);
  });
}

async function waitReady(url: string, running: Running, ca: string | undefined, timeoutMs: number, logs: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    if (running.child.exitCode !== null) {
      throw new Error(`docker-registry exited with ${running.child.exitCode} before answering /v2/:\n${logs()}`);
    }
    try {
      const status = await probe(url, ca);
      if (status === 200 || status === 401) return;
      lastErr = new Error(`/v2/ answered ${status}`);
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`docker-registry at ${url} not ready after ${timeoutMs} ms (${String(lastErr)}):\n${logs()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function fillTemplate(variant: RegistryVariant, values: Record<string, string>): Record<string, any> {
  let text = readFileSync(join(CONFIG_DIR, `${variant}.yml`), 'utf8');
  text = text.replace(/^\s*#.*$/gm, '').replace(/@([A-Z_]+)@/g, (m, k: string) => {
    const v = values[k];
    if (v === undefined) throw new Error(`registry config ${variant}.yml: no value for ${m}`);
    return v;
  });
  return parseYaml(text) as Record<string, any>;
}

/** Start a real registry on a free 127.0.0.1 port. */
export async function startRegistry(opts: StartRegistryOptions): Promise<RegistryHandle> {
  installExitHook();
  const variant = opts.variant;
  const useTls = opts.tls ?? variant === 'htpasswd';
  const dir = makeTempDir(`kbundle-registry-${variant}-`);
  const storageDir = opts.storageDir ?? join(dir, 'storage');
  mkdirSync(storageDir, { recursive: true });
  const configFile = join(dir, 'config.yml');
  const pidFile = join(dir, 'registry.pid');

  const users: Record<string, string> = variant === 'open' ? { ...(opts.users ?? {}) } : { ...(opts.users ?? { kbundle: `pw-${randomBytes(9).toString('base64url')}` }) };
  const firstUser = Object.keys(users)[0];

  const pki = useTls ? await createTestPki(join(dir, 'pki')) : undefined;
  let tokenServer: TokenServer | undefined;
  // A fixed http.secret per handle: upload URLs carry state HMAC'd with it, so uploads begun before
  // restart() stay valid afterwards (the registry otherwise picks a random secret at every start).
  const values: Record<string, string> = {
    STORAGE: storageDir,
    ADDR: '',
    HTTP_SECRET: randomBytes(24).toString('hex'),
    TLS_CERT: '',
    TLS_KEY: '',
  };
  if (variant === 'htpasswd') {
    const htpasswd = join(dir, 'htpasswd');
    writeHtpasswd(htpasswd, users, opts.bcryptCost ?? 5);
    values.HTPASSWD = htpasswd;
  }
  if (pki) {
    values.TLS_CERT = pki.certFile;
    values.TLS_KEY = pki.keyFile;
  }
  if (variant === 'token') {
    tokenServer = await startTokenServer({
      users,
      anonymousPull: opts.anonymousPull,
      ttlSeconds: opts.tokenTtlSeconds,
      authorize: opts.authorize,
      // With tls the realm is https too, served with the registry's certificate (same CA).
      tls: pki ? { cert: pki.certPem, key: pki.keyPem } : undefined,
      dir,
    });
    values.REALM = tokenServer.realm;
    values.SERVICE = tokenServer.service;
    values.ISSUER = tokenServer.issuer;
    values.ROOTCERTBUNDLE = tokenServer.issuerKey.certFile;
  }

  let output = '';
  const onOutput = (s: string): void => {
    output += s;
    if (output.length > 64 * 1024) output = output.slice(-64 * 1024);
  };
  const logs = (): string => {
    let file = '';
    try {
      file = readFileSync(`${pidFile}.log`, 'utf8').slice(-64 * 1024);
    } catch {
      /* not started yet */
    }
    return output + file;
  };

  const writeConfig = (port: number): void => {
    const cfg = fillTemplate(variant, { ...values, ADDR: `127.0.0.1:${port}` });
    if (pki) cfg.http.tls = { certificate: pki.certFile, key: pki.keyFile };
    else delete cfg.http.tls;
    opts.mutateConfig?.(cfg);
    writeFileSync(configFile, stringifyYaml(cfg));
  };

  const timeout = opts.readyTimeoutMs ?? 20_000;
  let running: Running | undefined;
  let port = 0;
  let url = '';
  try {
    for (let attempt = 0; ; attempt++) {
      port = await freePort();
      url = `${useTls ? 'https' : 'http'}://127.0.0.1:${port}`;
      writeConfig(port);
      output = '';
      running = spawnRegistry(configFile, pidFile, onOutput);
      running.pid = await readPid(pidFile, running, Date.now() + 5000);
      try {
        await waitReady(url, running, pki?.caPem, timeout, logs);
        break;
      } catch (err) {
        await stopRunning(running);
        if (attempt < 3 && /address already in use/i.test(output)) continue;
        throw err;
      }
    }
  } catch (err) {
    await tokenServer?.close();
    rmSync(dir, { recursive: true, force: true });
    tempDirs.delete(dir);
    throw err;
  }

  let current: Running = running;
  let stopped = false;
  const handle: RegistryHandle = {
    variant,
    host: `127.0.0.1:${port}`,
    port,
    url,
    tls: useTls,
    caFile: pki?.caFile,
    caPem: pki?.caPem,
    certDir: pki?.certDir,
    pki,
    username: firstUser,
    password: firstUser !== undefined ? users[firstUser] : undefined,
    users,
    tokenServer,
    storageDir,
    configFile,
    dir,
    get pid() {
      return current.pid;
    },
    logs,
    async restart() {
      if (stopped) throw new Error('registry already stopped');
      await stopRunning(current);
      current = spawnRegistry(configFile, pidFile, onOutput);
      current.pid = await readPid(pidFile, current, Date.now() + 5000);
      await waitReady(url, current, pki?.caPem, timeout, logs);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopRunning(current);
      await tokenServer?.close();
      // A caller-provided storageDir lives outside `dir` and is kept.
      rmSync(dir, { recursive: true, force: true });
      tempDirs.delete(dir);
    },
  };
  return handle;
}
