/**
 * A programmable HTTP fault-injection proxy on 127.0.0.1, in front of a (test) registry.
 *
 *   const proxy = await startFaultProxy({ target: reg.url, ca: reg.caPem });
 *   const r = proxy.addRule({ action: 'status', status: 503, method: 'PUT', path: /\/blobs\/uploads\//, times: 2 });
 *   proxy.addRule({ action: 'reset-request', afterBytes: 1 << 20, method: /PATCH|PUT/ });   // mid-upload
 *   proxy.addRule({ action: 'reset-response', afterBytes: 4096, path: /\/blobs\/sha256:/ }); // mid-download
 *   ... point the client at proxy.host ...
 *   expect(r.fired).toBe(2); expect(proxy.log.filter(e => e.fault)).toHaveLength(3);
 *   await proxy.close();
 *
 * It forwards requests and responses as streams (no buffering), keeping the client's Host header so
 * the registry builds `Location` URLs that point back at the proxy; `X-Forwarded-Proto` tells it the
 * proxy's scheme when the upstream speaks TLS. Resets are real TCP RSTs (socket.resetAndDestroy()).
 * Rules are checked in insertion order; the first matching rule with shots left applies (one per request).
 * The proxy is bounded: it closes itself after `maxLifetimeMs` (default 10 min) if close() was never called.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

export interface FaultMatch {
  /** HTTP method (exact, case-insensitive) or a RegExp tested against it. Default: any. */
  method?: string | RegExp;
  /** RegExp (or substring) tested against the request target (path + query). Default: any. */
  path?: string | RegExp;
  /** How many matching requests this rule affects. Default 1; Infinity allowed. */
  times?: number;
  /** Let this many matching requests through untouched before the rule starts firing. Default 0. */
  skip?: number;
}

export type FaultRule = FaultMatch &
  (
    | {
        /** Answer with `status` (e.g. 503) without contacting the upstream. */
        action: 'status';
        status: number;
        headers?: Record<string, string>;
        /** Default: a registry-style JSON error body. */
        body?: string;
      }
    | {
        /** Forward the first `afterBytes` bytes of the request body, then reset both connections. */
        action: 'reset-request';
        afterBytes: number;
      }
    | {
        /** Forward status, headers and the first `afterBytes` bytes of the response body, then reset. */
        action: 'reset-response';
        afterBytes: number;
      }
    | {
        /** Hold the request for `ms` (≤ 60 s) before forwarding it. */
        action: 'delay';
        ms: number;
      }
  );

export interface FaultRuleHandle {
  readonly id: number;
  readonly rule: FaultRule;
  /** How many requests this rule affected so far. */
  readonly fired: number;
  /** How many requests matched (including skipped and after exhaustion). */
  readonly matched: number;
  remove(): void;
}

export interface FaultLogEntry {
  id: number;
  time: number;
  method: string;
  /** Request target (path + query). */
  url: string;
  /** Status sent to the client (undefined when the connection was reset before headers). */
  status?: number;
  /** The action applied, if a rule fired. */
  fault?: FaultRule['action'];
  ruleId?: number;
  requestBytes: number;
  responseBytes: number;
  /** Upstream or client error, if any. */
  error?: string;
  done: boolean;
}

export interface FaultProxyOptions {
  /** Upstream base URL, e.g. `http://127.0.0.1:5000` or `https://127.0.0.1:5443`. */
  target: string;
  /** CA (PEM) trusted for an https upstream. */
  ca?: string | Buffer;
  /** Serve TLS to clients with this certificate/key (PEM). Default plain HTTP. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Self-close after this long. Default 600 000 ms. */
  maxLifetimeMs?: number;
  /** Keep at most this many log entries (oldest dropped). Default 5000. */
  maxLogEntries?: number;
}

export interface FaultProxy {
  /** `127.0.0.1:PORT` */
  host: string;
  port: number;
  /** `http://127.0.0.1:PORT` (or https) */
  url: string;
  log: FaultLogEntry[];
  addRule(rule: FaultRule): FaultRuleHandle;
  clearRules(): void;
  clearLog(): void;
  /** Resolves when no request is in flight (handy before asserting on the log). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'upgrade']);

function filterHeaders(h: http.IncomingHttpHeaders): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || HOP_BY_HOP.has(k)) continue;
    out[k] = v;
  }
  return out;
}

interface RuleState {
  id: number;
  rule: FaultRule;
  fired: number;
  matched: number;
}

function matches(rule: FaultRule, method: string, url: string): boolean {
  if (rule.method !== undefined) {
    if (typeof rule.method === 'string' ? rule.method.toUpperCase() !== method.toUpperCase() : !rule.method.test(method)) return false;
  }
  if (rule.path !== undefined) {
    if (typeof rule.path === 'string' ? !url.includes(rule.path) : !rule.path.test(url)) return false;
  }
  return true;
}

function reset(sock: Socket | null | undefined): void {
  if (!sock || sock.destroyed) return;
  try {
    sock.resetAndDestroy();
  } catch {
    sock.destroy();
  }
}

export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const target = new URL(opts.target);
  const upstreamTls = target.protocol === 'https:';
  const upstreamMod = upstreamTls ? https : http;
  const agent = upstreamTls ? new https.Agent({ keepAlive: true, ca: opts.ca, maxSockets: 64 }) : new http.Agent({ keepAlive: true, maxSockets: 64 });
  const rules: RuleState[] = [];
  const log: FaultLogEntry[] = [];
  const maxLog = opts.maxLogEntries ?? 5000;
  const sockets = new Set<Socket>();
  let nextRuleId = 1;
  let nextReqId = 1;
  let inFlight = 0;
  let idleWaiters: Array<() => void> = [];
  const proto = opts.tls ? 'https' : 'http';

  const pick = (method: string, url: string): RuleState | undefined => {
    for (const st of rules) {
      if (!matches(st.rule, method, url)) continue;
      st.matched++;
      const skip = st.rule.skip ?? 0;
      const times = st.rule.times ?? 1;
      if (st.matched <= skip) continue;
      if (st.fired >= times) continue;
      st.fired++;
      return st;
    }
    return undefined;
  };

  const finish = (entry: FaultLogEntry): void => {
    if (entry.done) return;
    entry.done = true;
    inFlight--;
    if (inFlight === 0) {
      const w = idleWaiters;
      idleWaiters = [];
      for (const f of w) f();
    }
  };

  const forward = (req: http.IncomingMessage, res: http.ServerResponse, entry: FaultLogEntry, st: RuleState | undefined): void => {
    const rule = st?.rule;
    const clientSock = req.socket;
    const headers = filterHeaders(req.headers);
    headers['x-forwarded-proto'] = proto;
    const up = upstreamMod.request({
      protocol: target.protocol,
      hostname: target.hostname,
      port: target.port,
      method: req.method,
      path: req.url,
      headers,
      agent,
    });
    let aborted = false;
    let cutting = false; // a reset is scheduled: ignore the errors our own destroy() provokes
    const abortBoth = (why: string): void => {
      if (aborted) return;
      aborted = true;
      entry.error ??= why;
      up.destroy();
      reset(clientSock);
      finish(entry);
    };

    up.on('error', (err) => {
      if (aborted || cutting) return;
      entry.error = err.message;
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'application/json', connection: 'close' });
        res.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: `fault proxy upstream error: ${err.message}` }] }));
        entry.status = 502;
      } else {
        reset(clientSock);
      }
      finish(entry);
    });

    up.on('response', (upRes) => {
      const outHeaders = filterHeaders(upRes.headers);
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, outHeaders);
      entry.status = upRes.statusCode;
      let limit = rule?.action === 'reset-response' ? rule.afterBytes : Infinity;
      if (limit <= 0) {
        cutting = true;
        res.flushHeaders();
        upRes.destroy();
        setTimeout(() => abortBoth('reset-response'), 20);
        return;
      }
      upRes.on('data', (chunk: Buffer) => {
        if (aborted) return;
        if (entry.responseBytes + chunk.length >= limit) {
          const part = chunk.subarray(0, limit - entry.responseBytes);
          entry.responseBytes += part.length;
          limit = -1;
          cutting = true;
          upRes.destroy();
          // Let the partial body reach the client before the RST discards unsent data.
          res.write(part, () => setTimeout(() => abortBoth('reset-response'), 20));
          return;
        }
        entry.responseBytes += chunk.length;
        if (!res.write(chunk)) {
          upRes.pause();
          res.once('drain', () => upRes.resume());
        }
      });
      upRes.on('end', () => {
        if (aborted || cutting) return;
        res.end(() => finish(entry));
      });
      upRes.on('error', (err) => {
        if (aborted || cutting) return;
        abortBoth(`upstream response: ${err.message}`);
      });
    });

    const reqLimit = rule?.action === 'reset-request' ? rule.afterBytes : Infinity;
    if (reqLimit <= 0) {
      abortBoth('reset-request');
      return;
    }
    req.on('data', (chunk: Buffer) => {
      if (aborted) return;
      if (entry.requestBytes + chunk.length >= reqLimit) {
        const part = chunk.subarray(0, reqLimit - entry.requestBytes);
        entry.requestBytes += part.length;
        cutting = true;
        req.pause();
        up.write(part, () => setTimeout(() => abortBoth('reset-request'), 20));
        return;
      }
      entry.requestBytes += chunk.length;
      if (!up.write(chunk)) {
        req.pause();
        up.once('drain', () => req.resume());
      }
    });
    req.on('end', () => {
      if (!aborted) up.end();
    });
    req.on('error', (err) => {
      if (!cutting) abortBoth(`client request: ${err.message}`);
    });
    res.on('close', () => {
      // Client went away before the response completed.
      if (!entry.done && !res.writableFinished && !cutting) abortBoth('client closed');
    });
  };

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const entry: FaultLogEntry = { id: nextReqId++, time: Date.now(), method, url, requestBytes: 0, responseBytes: 0, done: false };
    log.push(entry);
    if (log.length > maxLog) log.splice(0, log.length - maxLog);
    inFlight++;
    const st = pick(method, url);
    if (st) {
      entry.fault = st.rule.action;
      entry.ruleId = st.id;
    }
    const rule = st?.rule;
    if (rule?.action === 'status') {
      req.on('data', (c: Buffer) => {
        entry.requestBytes += c.length;
      });
      const body = rule.body ?? JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: `injected by fault proxy (rule ${st!.id})`, detail: null }] });
      res.writeHead(rule.status, {
        'content-type': 'application/json',
        'docker-distribution-api-version': 'registry/2.0',
        'x-fault-injected': String(st!.id),
        ...(rule.headers ?? {}),
        'content-length': Buffer.byteLength(body),
      });
      entry.status = rule.status;
      res.end(body, () => finish(entry));
      return;
    }
    if (rule?.action === 'delay') {
      let waiting = true;
      const t = setTimeout(
        () => {
          waiting = false;
          forward(req, res, entry, st);
        },
        Math.min(Math.max(rule.ms, 0), 60_000),
      );
      res.once('close', () => {
        if (!waiting) return;
        clearTimeout(t);
        entry.error = 'client closed during delay';
        finish(entry);
      });
      return;
    }
    forward(req, res, entry, st);
  };

  const server = opts.tls ? https.createServer({ cert: opts.tls.cert, key: opts.tls.key }, onRequest) : http.createServer(onRequest);
  server.keepAliveTimeout = 5000;
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (_err, sock: Socket) => {
    sock.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      clearTimeout(lifetime);
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      agent.destroy();
      await done;
      const w = idleWaiters;
      idleWaiters = [];
      for (const f of w) f();
    })();
    return closed;
  };
  const lifetime = setTimeout(() => void close(), opts.maxLifetimeMs ?? 600_000);
  lifetime.unref();

  return {
    host: `127.0.0.1:${port}`,
    port,
    url: `${proto}://127.0.0.1:${port}`,
    log,
    addRule(rule) {
      const st: RuleState = { id: nextRuleId++, rule, fired: 0, matched: 0 };
      rules.push(st);
      return {
        id: st.id,
        rule,
        get fired() {
          return st.fired;
        },
        get matched() {
          return st.matched;
        },
        remove() {
          const i = rules.indexOf(st);
          if (i >= 0) rules.splice(i, 1);
        },
      };
    },
    clearRules() {
      rules.length = 0;
    },
    clearLog() {
      log.length = 0;
    },
    idle() {
      if (inFlight === 0) return Promise.resolve();
      return new Promise<void>((resolve) => idleWaiters.push(resolve));
    },
    close,
  };
}
