/**
 * A hostile registry stand-in for the hardening tests: a small node:http server on a loopback
 * address that answers what each test programs, and records every request (which server, method,
 * path, and the Authorization header it carried).
 *
 *   const reg = await startHostileServer();                       // 127.0.0.1:PORT
 *   const foreign = await startHostileServer({ address: '::1' }); // [::1]:PORT, another host
 *   const img = serveImage(reg, 'kairos/app', 'v1');              // /v2/, manifest, config, layer
 *   reg.route('GET', /\/blobs\//, (req, res) => redirect(res, `${foreign.url}/blob`));
 *   ... run kbundle against `${reg.host}/kairos/app:v1` ...
 *   expect(foreign.requests.every((r) => !r.authorization)).toBe(true);
 *
 * Host identity is host:port; 127.0.0.1 and [::1] are different host names (for the rules that
 * compare names, e.g. a token realm), different ports are different origins. Routes are tried
 * newest first, so a test overrides what `serveImage` registered. Behaviours for slow and broken
 * peers: `stall` (never answer), `trickle` (a few bytes now and then), `resetAfter` (a TCP RST
 * after N body bytes), `trickleHeaders` (a status line dribbled byte by byte).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { cliCommand, type CliResult } from './cli.js';

export interface RecordedRequest {
  /** host:port of the server that received it. */
  server: string;
  method: string;
  /** Path and query. */
  url: string;
  authorization?: string;
  headers: http.IncomingHttpHeaders;
  time: number;
}

export type RouteHandler = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => void | Promise<void>;

export interface HostileServer {
  /** `127.0.0.1:PORT` or `[::1]:PORT` (as a registry reference or URL host writes it). */
  host: string;
  port: number;
  url: string;
  requests: RecordedRequest[];
  /** Answer requests whose method matches and whose path+query matches `path` (newest route first). */
  route(method: string | RegExp, path: string | RegExp, handler: RouteHandler): void;
  /** Requests that carried an Authorization header. */
  authorized(): RecordedRequest[];
  close(): Promise<void>;
}

export async function startHostileServer(opts: { address?: '127.0.0.1' | '::1' } = {}): Promise<HostileServer> {
  const address = opts.address ?? '127.0.0.1';
  const routes: Array<{ method: string | RegExp; path: string | RegExp; handler: RouteHandler }> = [];
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();
  let host = '';

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = req.url ?? '/';
      const method = req.method ?? 'GET';
      requests.push({ server: host, method, url, authorization: req.headers.authorization, headers: req.headers, time: Date.now() });
      const route = [...routes].reverse().find((r) => (typeof r.method === 'string' ? r.method === method : r.method.test(method)) && (typeof r.path === 'string' ? url === r.path : r.path.test(url)));
      if (!route) return json(res, 404, { errors: [{ code: 'NOT_FOUND', message: `no route for ${method} ${url}` }] });
      Promise.resolve(route.handler(req, res, Buffer.concat(chunks))).catch((e: unknown) => {
        if (!res.headersSent) json(res, 500, { errors: [{ code: 'UNKNOWN', message: String(e) }] });
        else res.destroy();
      });
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
  });
  server.on('clientError', (_e, s: Socket) => s.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, address, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  host = address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
  // A bound on its own lifetime, should a test forget close().
  const lifetime = setTimeout(() => void close(), 600_000);
  lifetime.unref();

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      clearTimeout(lifetime);
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    });
    return closed;
  };

  return {
    host,
    port,
    url: `http://${host}`,
    requests,
    route(method, path, handler) {
      routes.push({ method, path, handler });
    },
    authorized: () => requests.filter((r) => r.authorization !== undefined),
    close,
  };
}

/**
 * A test file's scratch folder and hostile servers: `tmp` is made before the file's tests and
 * removed after them, every server is closed after each test. Call at the top level of the file
 * (it registers vitest hooks).
 */
export function useHostileServers(prefix: string): { readonly tmp: string; server(address?: '127.0.0.1' | '::1'): Promise<HostileServer> } {
  let tmp: string | undefined;
  let servers: HostileServer[] = [];
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), prefix));
  });
  afterAll(() => rmSync(tmp!, { recursive: true, force: true }));
  afterEach(async () => {
    await Promise.all(servers.map((s) => s.close()));
    servers = [];
  });
  return {
    get tmp() {
      if (!tmp) throw new Error('useHostileServers: tmp is made in beforeAll');
      return tmp;
    },
    async server(address) {
      const s = await startHostileServer({ address });
      servers.push(s);
      return s;
    },
  };
}

export function json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

export function redirect(res: http.ServerResponse, location: string, status = 307): void {
  res.writeHead(status, { location, 'content-length': 0 });
  res.end();
}

/** Never answer (the socket stays open until the client gives up or the server closes). */
export function stall(): void {
  /* nothing */
}

/** Send status and headers now, then `chunk` bytes of `body` every `everyMs` (a slow-loris body). */
export function trickle(res: http.ServerResponse, status: number, headers: Record<string, string | number>, body: Buffer, chunk: number, everyMs: number): void {
  res.writeHead(status, { 'content-length': body.length, ...headers });
  res.flushHeaders();
  let off = 0;
  const t = setInterval(() => {
    if (res.destroyed || off >= body.length) {
      clearInterval(t);
      if (!res.destroyed) res.end();
      return;
    }
    res.write(body.subarray(off, off + chunk));
    off += chunk;
  }, everyMs);
  res.on('close', () => clearInterval(t));
}

/** Dribble a status line and headers one byte every `everyMs`, never finishing them. */
export function trickleHeaders(res: http.ServerResponse, everyMs: number): void {
  const sock = res.socket!;
  const text = Buffer.from(`HTTP/1.1 200 OK\r\nX-Slow: ${'a'.repeat(100_000)}`);
  let off = 0;
  const t = setInterval(() => {
    if (sock.destroyed || off >= text.length) return clearInterval(t);
    sock.write(text.subarray(off, off + 1));
    off++;
  }, everyMs);
  sock.on('close', () => clearInterval(t));
}

/** Send status, headers and the first `n` bytes of `body`, then reset the connection. */
export function resetAfter(res: http.ServerResponse, status: number, headers: Record<string, string | number>, body: Buffer, n: number): void {
  res.writeHead(status, { 'content-length': body.length, ...headers });
  res.write(body.subarray(0, n), () => {
    setTimeout(() => {
      const s = res.socket;
      if (s && !s.destroyed) s.resetAndDestroy();
    }, 20);
  });
}

export function sha256(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

export interface ServedImage {
  repo: string;
  tag: string;
  manifest: Buffer;
  digest: string;
  config: Buffer;
  layer: Buffer;
  blobs: Map<string, Buffer>;
}

/**
 * Register /v2/ (200, or what `ping` answers), the manifest under its tag and digest, and the
 * config and layer blobs of a one-layer image (HEAD and GET). `authorize` may refuse a request
 * (return false): it then gets `challenge` as a 401.
 */
export function serveImage(
  srv: HostileServer,
  repo: string,
  tag: string,
  opts: { layer?: Buffer; authorize?: (req: http.IncomingMessage) => boolean; challenge?: string; layerMediaType?: string } = {},
): ServedImage {
  const layer = opts.layer ?? Buffer.from('layer bytes of a hostile test image\n'.repeat(64));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256(layer)] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: [{ mediaType: opts.layerMediaType ?? 'application/vnd.oci.image.layer.v1.tar', digest: sha256(layer), size: layer.length }],
    }),
  );
  const digest = sha256(manifest);
  const blobs = new Map([
    [sha256(config), config],
    [sha256(layer), layer],
  ]);
  const denied = (req: http.IncomingMessage, res: http.ServerResponse): boolean => {
    if (!opts.authorize || opts.authorize(req)) return false;
    json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, { 'www-authenticate': opts.challenge ?? 'Basic realm="hostile"' });
    return true;
  };
  srv.route('GET', '/v2/', (req, res) => {
    if (!denied(req, res)) json(res, 200, {});
  });
  const esc = repo.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  srv.route(/^(GET|HEAD)$/, new RegExp(`^/v2/${esc}/manifests/(${tag}|${digest})$`), (req, res) => {
    if (denied(req, res)) return;
    res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': digest, 'content-length': manifest.length });
    res.end(req.method === 'HEAD' ? undefined : manifest);
  });
  srv.route(/^(GET|HEAD)$/, new RegExp(`^/v2/${esc}/blobs/(sha256:[0-9a-f]{64})$`), (req, res) => {
    if (denied(req, res)) return;
    const d = /blobs\/(sha256:[0-9a-f]{64})/.exec(req.url ?? '')![1]!;
    const b = blobs.get(d);
    if (!b) return json(res, 404, { errors: [{ code: 'BLOB_UNKNOWN' }] });
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'docker-content-digest': d, 'content-length': b.length });
    res.end(req.method === 'HEAD' ? undefined : b);
  });
  return { repo, tag, manifest, digest, config, layer, blobs };
}

/** The environment for a CLI run against a stand-in: no login from the caller's environment or docker config. */
export function isolatedEnv(dockerConfigDir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, DOCKER_CONFIG: dockerConfigDir, ...extra };
  for (const k of Object.keys(env)) if (k.startsWith('KBUNDLE_') && !(k in extra) && k !== 'KBUNDLE_BIN') delete env[k];
  return env;
}

/** `Basic base64(user:password)`, as a server checks it. */
export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

export interface TimedResult extends CliResult {
  /** Wall-clock milliseconds from spawn to exit. */
  ms: number;
  /** The run outlived `killAfterMs` and was killed (the hang the test looks for). */
  killed: boolean;
}

/**
 * Run the CLI as a process (not blocking this process's event loop, which serves the stand-in),
 * killing it after `killAfterMs`: a test of a deadline must not itself hang when the deadline
 * is missing.
 */
export function runKbundle(args: string[], opts: { env: NodeJS.ProcessEnv; input?: string; killAfterMs: number; cwd?: string }): Promise<TimedResult> {
  const { file, args: lead } = cliCommand();
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const p = spawn(file, [...lead, ...args], { env: opts.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      p.kill('SIGKILL');
    }, opts.killAfterMs);
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr, ms: Date.now() - start, killed });
    });
    p.stdin.end(opts.input);
  });
}
