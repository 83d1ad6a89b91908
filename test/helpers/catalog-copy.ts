import { createHash } from 'node:crypto';
import { cpSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { parseDocument } from 'yaml';
import { craftTar } from './craft-image.js';
import { REPO_ROOT } from './exec.js';

export interface FixtureServer {
  url: string;
  /** Every path asked for, in order. */
  requests: string[];
  close(): Promise<void>;
}

/** Serve fixed bytes per path on 127.0.0.1 (stand-in for pinned upstream downloads). */
export async function serveFixtures(files: Record<string, Buffer>): Promise<FixtureServer> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    requests.push(req.url ?? '');
    const body = files[req.url ?? ''];
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': body.length }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, requests, close: () => new Promise((r) => server.close(() => r())) };
}

/**
 * Copy the real catalog into `dest`, pointing every pinned download at the loopback fixture
 * server instead (same file name, fixture bytes and their sha256): no network needed.
 */
export async function copyCatalogOffline(dest: string): Promise<FixtureServer> {
  // verbatimSymlinks: keep relative links relative (qemu-guest-agent's multi-user.target.wants link).
  cpSync(join(REPO_ROOT, 'bundles'), dest, { recursive: true, verbatimSymlinks: true });
  const fixtures: Record<string, Buffer> = {};
  const rewrites: { file: string; doc: ReturnType<typeof parseDocument> }[] = [];
  for (const name of readdirSync(dest)) {
    const file = join(dest, name, 'bundle.yaml');
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    if (!text.includes('url:')) continue;
    rewrites.push({ file, doc: parseDocument(text) });
  }
  const server = await serveFixtures(fixtures);
  type Download = { url?: string; sha256?: string; extract?: string };
  const specs = rewrites.map(({ file, doc }) => ({ file, spec: doc.toJS() as { files?: Download[]; platform_files?: Record<string, Download[]> } }));
  const downloads = specs.flatMap(({ spec }) => [...(spec.files ?? []), ...Object.values(spec.platform_files ?? {}).flat()]).filter((f) => f.url);
  // One fixture per URL: an archive download (extract:) is a tar.gz holding every member any
  // entry takes out of that URL (bundles such as multus take many files out of one archive).
  const members = new Map<string, string[]>();
  for (const f of downloads) if (f.extract) members.set(f.url!, [...(members.get(f.url!) ?? []), f.extract]);
  const served = new Map<string, { path: string; sha256: string }>();
  for (const f of downloads) {
    const url = f.url!;
    if (!served.has(url)) {
      const path = `/${createHash('sha256').update(url).digest('hex').slice(0, 12)}/${url.split('/').pop()}`;
      const content = (what: string) => Buffer.from(`#!/bin/sh\necho fixture for ${what}\n`);
      const names = [...new Set(members.get(url) ?? [])];
      const bytes = names.length
        ? gzipSync(await craftTar([...names.map((n) => ({ name: n, type: 'file' as const, mode: 0o755, content: content(`${url} ${n}`) })), { name: 'LICENSE', type: 'file', content: 'fixture\n' }]))
        : content(url);
      fixtures[path] = bytes;
      served.set(url, { path, sha256: createHash('sha256').update(bytes).digest('hex') });
    }
    const s = served.get(url)!;
    f.url = server.url + s.path;
    f.sha256 = s.sha256;
  }
  for (const { file, spec } of specs) writeFileSync(file, JSON.stringify(spec, null, 2)); // JSON is YAML
  return server;
}
