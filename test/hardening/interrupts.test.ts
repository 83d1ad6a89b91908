/**
 * A command stopped by SIGTERM or SIGINT while it stages a file leaves no temp file behind: the
 * staged write (src/util/atomic-write.ts, the one way kbundle puts a file in place) removes its
 * temp, and a staging folder made there is removed too, before the process exits with 128 + the
 * signal number. Here: a build stopped while its layer blob is being written into the output
 * layout, and an install from a registry stopped while its downloaded layers sit in a staging folder.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadToFile } from '../../src/registry/download.js';
import { cliCommand, kbundle } from '../helpers/cli.js';
import { cleanupTempDirs, tempDir } from '../helpers/exec.js';
import { startRegistry, type RegistryHandle } from '../helpers/registry.js';

afterAll(cleanupTempDirs);

/** A bundle whose layer takes a while to compress: 128 MiB of random bytes. */
function slowBundle(): string {
  const dir = tempDir();
  mkdirSync(join(dir, 'data'));
  for (let i = 0; i < 4; i++) writeFileSync(join(dir, 'data', `blob-${i}`), randomBytes(32 * 1024 * 1024));
  writeFileSync(join(dir, 'bundle.yaml'), 'name: slow\nversion: 1.0.0\ndescription: slow to build\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - src: data\n    dst: data\n');
  return dir;
}

const staged = (blobs: string) => (existsSync(blobs) ? readdirSync(blobs).filter((n) => n.includes('.tmp-')) : []);

/** Start a build into `out`; once its layer blob is being staged, send `signal`; resolve with the exit. */
function interruptBuild(bundle: string, out: string, signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; sawStaged: boolean }> {
  const { file, args } = cliCommand();
  const child = spawn(file, [...args, 'build', bundle, '-o', `oci:${out}:slow`], { stdio: 'ignore' });
  const blobs = join(out, 'blobs', 'sha256');
  return new Promise((resolve, reject) => {
    let sawStaged = false;
    const deadline = Date.now() + 30_000;
    const poll = setInterval(() => {
      if (staged(blobs).length) {
        sawStaged = true;
        clearInterval(poll);
        child.kill(signal);
      } else if (Date.now() > deadline) {
        clearInterval(poll);
        child.kill('SIGKILL');
        reject(new Error('the build never staged its layer within 30 s'));
      }
    }, 5);
    child.on('exit', (code, sig) => {
      clearInterval(poll);
      resolve({ code, signal: sig, sawStaged });
    });
  });
}

describe('interrupted commands', () => {
  const bundle = slowBundle();

  for (const [signal, code] of [
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const) {
    it(`a build stopped by ${signal} while it writes its layer exits ${code} and leaves no temp file`, async () => {
      const out = join(tempDir(), 'layout');
      const r = await interruptBuild(bundle, out, signal);
      expect(r.sawStaged).toBe(true);
      expect(r).toMatchObject({ code, signal: null });
      expect(staged(join(out, 'blobs', 'sha256'))).toEqual([]);
      expect(readdirSync(out).filter((n) => n.includes('.tmp-'))).toEqual([]);
    });
  }
});

describe('an interrupted install from a registry', () => {
  // Only this suite needs a registry.
  let reg: RegistryHandle;
  beforeAll(async () => void (reg = await startRegistry({ variant: 'open' })));
  afterAll(() => reg.stop());

  it('removes the staging folder of its downloaded layers before it exits 143', () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'b', 'files'), { recursive: true });
    for (let i = 0; i < 40; i++) writeFileSync(join(dir, 'b', 'files', `f-${i}`), `file ${i}\n`);
    writeFileSync(join(dir, 'b', 'bundle.yaml'), 'name: app\nversion: 1.0.0\ndescription: app\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - src: files\n    dst: opt/app\n');
    expect(kbundle(['build', join(dir, 'b'), '-o', `oci:${join(dir, 'oci')}:app`]).code).toBe(0);
    const ref = `${reg.host}/interrupt/app:1`;
    expect(kbundle(['push', `oci:${join(dir, 'oci')}:app`, ref]).code).toBe(0);
    // The layers are downloaded into a staging folder under TMPDIR; SIGTERM after the 3rd journal record, while they are there.
    const tmp = join(dir, 'tmp');
    mkdirSync(tmp);
    const r = kbundle(['install', `container://${ref}`, '--root', join(dir, 'root')], { env: { ...process.env, TMPDIR: tmp, KBUNDLE_TEST_SIGNAL_AT: '3:SIGTERM' } });
    expect(r.code, r.stderr).toBe(143);
    expect(readdirSync(tmp)).toEqual([]);
  });
});

describe('a staged download (bundle.yaml url: files) is opened without O_CREAT', () => {
  let server: Server;
  let url: string;
  const body = randomBytes(200_000);
  beforeAll(async () => {
    server = createServer((_req, res) => res.end(body));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/file`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('fails when its temp is gone (as after a signal removed it) instead of making it again', async () => {
    const dest = join(tempDir(), 'gone.tmp');
    await expect(downloadToFile({ url, dest, what: 'test', staged: true })).rejects.toMatchObject({ code: 'ENOENT' });
    expect(existsSync(dest)).toBe(false);
  });

  it('empties the temp first: a longer leftover of an earlier attempt does not survive', async () => {
    const dest = join(tempDir(), 'kept.tmp');
    writeFileSync(dest, Buffer.alloc(300_000, 'x'));
    expect(await downloadToFile({ url, dest, what: 'test', staged: true })).toEqual({ bytes: body.length });
    expect(readFileSync(dest).equals(body)).toBe(true);
  });
});
