/**
 * A private Sigstore on 127.0.0.1 for offline keyless tests: @sigstore/mock's Fulcio (with a CT log),
 * Rekor and timestamp authority served by node:http, and the trusted_root.json that trusts them.
 *
 *   const stack = await startSigstoreStack();
 *   token = stack.token('https://github.com/acme/release.yml@refs/heads/main', 'https://token.actions.example');
 *   kbundle sign … --identity-token $token --fulcio-url stack.url --rekor-url stack.url [--tsa-url stack.url]
 *   kbundle verify … --trusted-root stack.trustedRootFile --certificate-identity … --certificate-oidc-issuer …
 *   stack.clock.setTime(…)   // move every service's clock (certificates, log entries, timestamps)
 *   await stack.stop();
 *
 * The mock services take a fixed Date as their clock; it is one shared, mutable Date pinned to a
 * whole second after the mock roots were created (RFC 3161 GeneralizedTime drops fractional zeros,
 * and a signing time before a root's notBefore does not chain: either breaks verification now and
 * then). The mock Rekor stores a proposed entry as is; for `dsse` entries this stand-in
 * computes the canonical body real Rekor would log (envelope hash, payload hash, signature, verifier).
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fulcioHandler, initializeCA, initializeCTLog, initializeTLog, initializeTSA, rekorHandler, tsaHandler, type HandlerFn } from '@sigstore/mock';

export interface SigstoreStack {
  /** Base URL of every service: Fulcio, Rekor and the TSA answer on their usual paths. */
  url: string;
  trustedRoot: Record<string, unknown>;
  trustedRootFile: string;
  /** The services' shared clock; change it with setTime. */
  clock: Date;
  /** An (unsigned) OIDC token the mock Fulcio accepts: SAN = subject, issuer extension = issuer. */
  token(subject: string, issuer: string): string;
  /** Paths of the requests served, in order. */
  requests: string[];
  stop(): Promise<void>;
}

const b64url = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const sha256hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** What real Rekor logs for a proposed `dsse` entry (rekor pkg/types/dsse/v0.0.1). */
function canonicalDsse(proposed: any): unknown {
  const envText: string = proposed.spec.proposedContent.envelope;
  const env = JSON.parse(envText) as { payload: string; signatures: { sig: string }[] };
  return {
    apiVersion: '0.0.1',
    kind: 'dsse',
    spec: {
      envelopeHash: { algorithm: 'sha256', value: sha256hex(envText) },
      payloadHash: { algorithm: 'sha256', value: sha256hex(Buffer.from(env.payload, 'base64')) },
      signatures: env.signatures.map((s, i) => ({ signature: s.sig, verifier: proposed.spec.proposedContent.verifiers[i] ?? proposed.spec.proposedContent.verifiers[0] })),
    },
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of req) parts.push(c as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

export async function startSigstoreStack(opts: { clock?: Date } = {}): Promise<SigstoreStack> {
  // One Date shared by every service; set below, once the CA and TSA certificates exist.
  const clock = new Date(0);
  const server: Server = createServer();
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as { port: number }).port;
  const url = `http://127.0.0.1:${port}`;

  const ctlog = await initializeCTLog(generateKeyPairSync('ec', { namedCurve: 'P-256' }), clock);
  const ca = await initializeCA(generateKeyPairSync('ec', { namedCurve: 'P-256' }), ctlog, clock);
  const tlogKeys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const tlog = await initializeTLog(url, tlogKeys, clock);
  const tsa = await initializeTSA(generateKeyPairSync('ec', { namedCurve: 'P-256' }), clock);

  // Whole seconds (GeneralizedTime/UTCTime have no fractions), and not before the roots just created:
  // their notBefore is "now" rounded down to the second, and a signing time before it does not chain.
  clock.setTime(opts.clock ? opts.clock.getTime() : Math.ceil(Date.now() / 1000) * 1000 + 1000);
  const fulcio = fulcioHandler(ca);
  const rekor = rekorHandler(tlog);
  const timestamp = tsaHandler(tsa);
  const rekorFn: HandlerFn = async (body) => {
    const proposed = JSON.parse(body) as { kind?: string };
    return rekor.fn(proposed.kind === 'dsse' ? JSON.stringify(canonicalDsse(proposed)) : body);
  };
  const routes: Record<string, HandlerFn> = { [fulcio.path]: fulcio.fn, [rekor.path]: rekorFn, [timestamp.path]: timestamp.fn };
  const requests: string[] = [];
  server.on('request', (req, res) => {
    void (async () => {
      const path = (req.url ?? '').split('?')[0]!;
      requests.push(path);
      const fn = req.method === 'POST' ? routes[path] : undefined;
      if (!fn) {
        res.writeHead(404).end('not found');
        return;
      }
      try {
        const r = await fn(await readBody(req));
        const body = typeof r.response === 'string' ? r.response : Buffer.from(r.response.buffer, r.response.byteOffset, r.response.byteLength);
        res.writeHead(r.statusCode, { 'content-type': r.contentType ?? 'text/plain' }).end(body);
      } catch (e) {
        res.writeHead(500).end(String(e));
      }
    })();
  });

  const start = '2000-01-01T00:00:00.000Z';
  const tlogPub = Buffer.from(tlog.publicKey);
  const trustedRoot = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [
      {
        baseUrl: url,
        hashAlgorithm: 'SHA2_256',
        publicKey: { rawBytes: tlogPub.toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start } },
        logId: { keyId: createHash('sha256').update(tlogPub).digest('base64') },
      },
    ],
    certificateAuthorities: [
      {
        subject: { organization: 'sigstore.mock', commonName: 'sigstore' },
        uri: url,
        certChain: { certificates: [{ rawBytes: Buffer.from(ca.rootCertificate.buffer, ca.rootCertificate.byteOffset, ca.rootCertificate.byteLength).toString('base64') }] },
        validFor: { start },
      },
    ],
    ctlogs: [
      {
        baseUrl: url,
        hashAlgorithm: 'SHA2_256',
        publicKey: { rawBytes: Buffer.from(ctlog.publicKey).toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start } },
        logId: { keyId: Buffer.from(ctlog.logID.buffer, ctlog.logID.byteOffset, ctlog.logID.byteLength).toString('base64') },
      },
    ],
    timestampAuthorities: [
      {
        subject: { organization: 'sigstore.mock', commonName: 'tsa' },
        uri: url,
        certChain: {
          certificates: [
            { rawBytes: Buffer.from(tsa.intCertificate.buffer, tsa.intCertificate.byteOffset, tsa.intCertificate.byteLength).toString('base64') },
            { rawBytes: Buffer.from(tsa.rootCertificate.buffer, tsa.rootCertificate.byteOffset, tsa.rootCertificate.byteLength).toString('base64') },
          ],
        },
        validFor: { start },
      },
    ],
  };
  const dir = mkdtempSync(join(tmpdir(), 'kbundle-sigstore-'));
  const trustedRootFile = join(dir, 'trusted_root.json');
  writeFileSync(trustedRootFile, JSON.stringify(trustedRoot, null, 2));

  return {
    url,
    trustedRoot,
    trustedRootFile,
    clock,
    requests,
    token(subject: string, issuer: string): string {
      const now = Math.floor(clock.getTime() / 1000);
      return `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ iss: issuer, sub: subject, aud: 'sigstore', iat: now, exp: now + 600 })}.c2ln`;
    },
    async stop() {
      const closed = new Promise<void>((res) => server.close(() => res()));
      server.closeAllConnections();
      await closed;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
