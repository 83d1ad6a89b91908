/**
 * How errors reach the user: every error code has its own exit code (src/cli/exit-codes.ts),
 * a KbError prints one message (and hint) without a stack, anything else is an internal error
 * with its stack. Real commands, run in-process through `main(argv, io)`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildTo } from '../src/builder/output.js';
import { EXIT_CODES, EXIT_INTERNAL, EXIT_USAGE } from '../src/cli/exit-codes.js';
import type { CliIo } from '../src/cli/io.js';
import { main, reportError } from '../src/cli/main.js';
import { KbError, UserError, type ErrorCode } from '../src/errors.js';
import { kbundleInProcess as kbundle, type CliResult } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { CONTAINER_FILES, CONTAINER_SPEC, writeBundle } from './helpers/fixture-bundle.js';

const env = { KBUNDLE_PASSWORD: 'pw' };
let keys: string;
let layout: string;
let server: Server;
let base: string;

beforeAll(async () => {
  keys = tempDir();
  expect((await kbundle(['key', 'generate', '--out', join(keys, 'k')], { env })).code).toBe(0);
  const b = writeBundle(join(tempDir(), 'b'), CONTAINER_SPEC, CONTAINER_FILES);
  layout = join(tempDir(), 'oci');
  await buildTo(b, { transport: 'oci', path: layout, ref: 'v1' }, { sourceDateEpoch: 0, platforms: ['linux/amd64'] });
  // Answers /<status> with that HTTP status: the download paths map statuses to codes.
  server = createServer((req, res) => {
    res.statusCode = Number(req.url?.slice(1)) || 500;
    res.end('no');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  cleanupTempDirs();
});

/** One user-facing error: the table's exit code, one `kbundle: error:` line, no stack. */
function expectError(r: CliResult, code: ErrorCode, message: RegExp): void {
  expect(r.code, r.stderr).toBe(EXIT_CODES[code]);
  expect(r.stderr).toMatch(/^kbundle: error: /);
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(r.stdout).toBe('');
}

/** A bundle folder whose one file is a pinned download from `url`. */
function downloadBundle(url: string): string {
  return writeBundle(join(tempDir(), 'dl'), `name: demo\nversion: 1.0.0\ndescription: d\ntype: container\nfiles:\n  - url: ${url}\n    sha256: ${'a'.repeat(64)}\n    dst: x\n`, []);
}

describe('exit codes of real failures', () => {
  it('INVALID_INPUT: a bad flag value exits 1 with the flag named', async () => {
    expectError(await kbundle(['build', tempDir(), '--gzip-level', '0']), 'INVALID_INPUT', /--gzip-level: "0" must be 1-9/);
  });

  it('usage errors exit 2 (commander)', async () => {
    const r = await kbundle(['frobnicate']);
    expect(r.code).toBe(EXIT_USAGE);
    expect(r.stderr).toMatch(/unknown command 'frobnicate'/);
  });

  it('NOT_FOUND: a folder without bundle.yaml, a missing key file', async () => {
    expectError(await kbundle(['validate', join(tempDir(), 'nothing')]), 'NOT_FOUND', /bundle\.yaml: not found\n {2}hint: a bundle is a folder/);
    expectError(await kbundle(['verify', `oci:${layout}:v1`, '--key', join(keys, 'missing.pub')]), 'NOT_FOUND', /missing\.pub: cannot read the public key \(ENOENT\)/);
  });

  it('UNSUPPORTED: an install scheme kairos-agent does not have', async () => {
    expectError(await kbundle(['sysext', 'install', 'ftp://127.0.0.1/x.raw', '--root', tempDir()]), 'UNSUPPORTED', /unsupported scheme "ftp:"/);
  });

  it('CONFLICT: key generate over existing files without --force', async () => {
    expectError(await kbundle(['key', 'generate', '--out', join(keys, 'k')], { env }), 'CONFLICT', /k\.key already exists\n {2}hint: .*--force/);
  });

  it('REFUSED: verifying an unsigned image, and a signature by another key', async () => {
    expectError(await kbundle(['verify', `oci:${layout}:v1`, '--key', join(keys, 'k.pub')]), 'REFUSED', /no signatures found/);
    const other = tempDir();
    expect((await kbundle(['key', 'generate', '--out', join(other, 'o')], { env })).code).toBe(0);
    const signed = join(tempDir(), 'signed');
    await buildTo(writeBundle(join(tempDir(), 'b2'), CONTAINER_SPEC, CONTAINER_FILES), { transport: 'oci', path: signed, ref: 'v1' }, { sourceDateEpoch: 0, platforms: ['linux/amd64'] });
    expect((await kbundle(['sign', `oci:${signed}:v1`, '--key', join(keys, 'k.key')], { env })).code).toBe(0);
    expectError(await kbundle(['verify', `oci:${signed}:v1`, '--key', join(other, 'o.pub')]), 'REFUSED', /signature verification failed: .*not signed by/);
  });

  it('REFUSED with --json: the verdict on stdout, the error on stderr', async () => {
    const r = await kbundle(['verify', `oci:${layout}:v1`, '--key', join(keys, 'k.pub'), '--json']);
    expect(r.code).toBe(EXIT_CODES.REFUSED);
    expect(JSON.parse(r.stdout)).toMatchObject({ verified: false, error: expect.stringMatching(/no signatures found/) });
  });

  it('DIGEST_MISMATCH: a manifest whose bytes were changed under its digest', async () => {
    const copy = tempDir();
    const b = writeBundle(join(tempDir(), 'b3'), CONTAINER_SPEC, CONTAINER_FILES);
    const root = (await buildTo(b, { transport: 'oci', path: copy, ref: 'v1' }, { sourceDateEpoch: 0, platforms: ['linux/amd64'] })).root;
    const blob = join(copy, 'blobs', 'sha256', root.digest.slice('sha256:'.length));
    writeFileSync(blob, `${readFileSync(blob, 'utf8')}\n`); // still valid JSON, no longer these bytes
    const r = await kbundle(['verify', `oci:${copy}:v1`, '--key', join(keys, 'k.pub')]);
    expectError(r, 'DIGEST_MISMATCH', /does not match|hash to/);
  });

  it('downloads: refused connection TRANSIENT, 401 UNAUTHORIZED, 403 DENIED, 404 NOT_FOUND, 503 TRANSIENT', async () => {
    const out = (name: string) => `oci:${join(tempDir(), name)}`;
    // The download cache is the builder's (it reads the process environment); keep it out of $HOME.
    process.env.KBUNDLE_CACHE_DIR = tempDir();
    expectError(await kbundle(['build', downloadBundle('http://127.0.0.1:1/x'), '-o', out('a')]), 'TRANSIENT', /download of http:\/\/127\.0\.0\.1:1\/x failed/);
    expectError(await kbundle(['build', downloadBundle(`${base}/401`), '-o', out('b')]), 'UNAUTHORIZED', /HTTP 401/);
    expectError(await kbundle(['build', downloadBundle(`${base}/403`), '-o', out('c')]), 'DENIED', /HTTP 403/);
    expectError(await kbundle(['build', downloadBundle(`${base}/404`), '-o', out('d')]), 'NOT_FOUND', /HTTP 404/);
    expectError(await kbundle(['build', downloadBundle(`${base}/503`), '-o', out('e')]), 'TRANSIENT', /HTTP 503/);
  });
});

describe('presentation of each code', () => {
  const capture = (): CliIo & { err: () => string } => {
    let err = '';
    return {
      stdout: { write: () => true },
      stderr: { write: (c: string | Uint8Array) => ((err += c.toString()), true) },
      stdin: process.stdin,
      env: {},
      err: () => err,
    };
  };

  it('every code has its own exit code within 1–123 (0 and 2 reserved for success and usage)', () => {
    const codes = Object.values(EXIT_CODES);
    expect(new Set(codes).size).toBe(codes.length);
    for (const c of codes) expect(c >= 1 && c <= 123 && c !== EXIT_USAGE).toBe(true);
  });

  for (const code of Object.keys(EXIT_CODES) as ErrorCode[]) {
    it(`${code}: exit ${EXIT_CODES[code]}, the message and hint, no stack`, () => {
      const io = capture();
      const e = new KbError(code, `something ${code.toLowerCase()}`, { hint: 'do this', cause: new Error('inner') });
      expect(reportError(e, io)).toBe(EXIT_CODES[code]);
      const label = code === 'INTERNAL' ? 'internal error (please report)' : 'error';
      expect(io.err()).toBe(`kbundle: ${label}: something ${code.toLowerCase()}\n  hint: do this\n`);
    });
  }

  it('UserError is INVALID_INPUT unless given another code', () => {
    const io = capture();
    expect(reportError(new UserError('bad'), io)).toBe(1);
    expect(reportError(new UserError('gone', undefined, undefined, 'NOT_FOUND'), io)).toBe(EXIT_CODES.NOT_FOUND);
  });

  it('an unexpected error is an internal error: exit 70 with its stack', () => {
    const io = capture();
    expect(reportError(new TypeError('x is undefined'), io)).toBe(EXIT_INTERNAL);
    expect(io.err()).toMatch(/^kbundle: internal error \(please report\): TypeError: x is undefined\n\s+at /);
  });

  it('a bug inside a command takes the internal-error path of main()', async () => {
    // The command succeeds, then writing its result fails with a plain Error: not a KbError.
    let err = '';
    const io: CliIo = {
      stdout: {
        write: () => {
          throw new Error('stdout exploded');
        },
      },
      stderr: { write: (c: string | Uint8Array) => ((err += c.toString()), true) },
      stdin: process.stdin,
      env: process.env,
    };
    const code = await main(['node', 'kbundle', 'validate', writeBundle(join(tempDir(), 'v'), CONTAINER_SPEC, CONTAINER_FILES)], io);
    expect(code).toBe(EXIT_INTERNAL);
    expect(err).toMatch(/^kbundle: internal error \(please report\): Error: stdout exploded\n\s+at /);
  });

  it('in-process runs write only to the io they are given, never to the process streams', async () => {
    const out = vi.spyOn(process.stdout, 'write');
    const err = vi.spyOn(process.stderr, 'write');
    try {
      const help = await kbundle(['--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toMatch(/^Usage: kbundle/);
      const ok = await kbundle(['validate', writeBundle(join(tempDir(), 'w'), CONTAINER_SPEC, CONTAINER_FILES), '--json']);
      expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, name: 'demo-tools' });
      expect((await kbundle(['verify', `oci:${layout}:v1`, '--key', join(keys, 'k.pub')])).code).toBe(EXIT_CODES.REFUSED);
      expect(out).not.toHaveBeenCalled();
      expect(err).not.toHaveBeenCalled();
    } finally {
      out.mockRestore();
      err.mockRestore();
    }
  });
});
