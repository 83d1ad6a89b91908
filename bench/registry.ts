/**
 * The registry the transfer, verify and latency benches run against: a fresh docker-registry
 * (distribution 2.8, plain HTTP, no auth) on a free loopback port, its storage under `dir`.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

export interface Registry {
  /** `127.0.0.1:PORT` */
  host: string;
  port: number;
  /** Stop it and remove its storage. */
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (asked of the kernel, then released). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** A fresh docker-registry with its own storage under `dir`; rejects after ~10 s if it does not answer. */
export async function startRegistry(dir: string): Promise<Registry> {
  const port = await freePort();
  mkdirSync(join(dir, 'storage'), { recursive: true });
  const cfg = join(dir, 'config.yml');
  writeFileSync(
    cfg,
    [
      'version: 0.1',
      'log: {level: error, accesslog: {disabled: true}}',
      `storage: {filesystem: {rootdirectory: "${join(dir, 'storage')}"}, delete: {enabled: true}}`,
      `http: {addr: "127.0.0.1:${port}"}`,
      '',
    ].join('\n'),
  );
  const child = spawn(process.env.KBUNDLE_TEST_REGISTRY_BIN ?? '/usr/bin/docker-registry', ['serve', cfg], { stdio: 'ignore' });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/v2/`)).ok) break;
    } catch {
      if (i > 200) {
        child.kill('SIGTERM');
        throw new Error(`registry on ${url} did not start`);
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    host: `127.0.0.1:${port}`,
    port,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
