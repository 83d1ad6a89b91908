/**
 * bench/latency: the commands a node and CI run against a registry a 20 ms round trip away
 * (bench/lag-proxy.ts: 10 ms each way, and a 20 ms handshake per new connection), where round
 * trips and connections set the time, not bytes: a pull and a push of a one-file image next to
 * `skopeo copy` through the same proxy (interleaved, medians of BENCH_RUNS, default 7), and
 * `verify` and `install` of the signed image and `sign` (no peer here: milliseconds). Loopback benches do not
 * see any of this. RESULT lines: the pull and push ratios, verify and install in ms (no targets:
 * the issue sets none for latency).
 *
 *   npx tsc -p . && npm run --silent bundle && node dist/bench/latency.js   (BENCH_RUNS, BENCH_ONE_WAY_MS)
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, printTable } from './common.js';
import { freePort, startRegistry } from './registry.js';
import { BENCH_ENV, emitResult, timeProcess } from './result.js';

const runs = Number(process.env.BENCH_RUNS ?? 7);
const oneWayMs = Number(process.env.BENCH_ONE_WAY_MS ?? 10);
const cli = resolve('dist/src/cli/kbundle.cjs');
const work = mkdtempSync(join(tmpdir(), 'kbundle-bench-latency-'));
const env = { ...BENCH_ENV, KBUNDLE_PASSWORD: 'bench' };
const kb = (args: string) => `node ${cli} ${args}`;

function mustRun(cmd: string): void {
  const r = spawnSync('sh', ['-c', cmd], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`failed (${r.status}): ${cmd}\n${r.stderr}`);
}

const reg = await startRegistry(join(work, 'registry'));
const port = await freePort();
const proxy = spawn(process.execPath, [join(dirname(fileURLToPath(import.meta.url)), 'lag-proxy.js'), String(port), String(reg.port), String(oneWayMs)], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
try {
  await new Promise<void>((ready, fail) => {
    proxy.stdout!.once('data', () => ready());
    proxy.once('exit', (code) => fail(new Error(`lag-proxy exited (${code})`)));
  });
  const far = `127.0.0.1:${port}`;

  // A one-file bundle, pushed and signed (both formats) straight to the registry.
  const bundle = join(work, 'bundle');
  mkdirSync(join(bundle, 'files'), { recursive: true });
  writeFileSync(join(bundle, 'files', 'hello.txt'), 'hello\n');
  writeFileSync(join(bundle, 'bundle.yaml'), 'name: hello\nversion: 1.0.0\ndescription: one file\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - src: files\n    dst: opt/hello\n');
  const image = join(work, 'image');
  mustRun(kb(`build ${bundle} -o oci:${image}:v1`));
  mustRun(kb(`push oci:${image}:v1 ${reg.host}/lat/signed:v1 --plain-http`));
  mustRun(kb(`key generate --out ${join(work, 'k')}`));
  mustRun(kb(`sign ${reg.host}/lat/signed:v1 --key ${join(work, 'k.key')} --plain-http`));

  const wall: Record<string, number[]> = { kPull: [], sPull: [], kPush: [], sPush: [], verify: [], install: [], sign: [] };
  const time = (key: string, cmd: string) => wall[key]!.push(timeProcess(cmd, env).seconds);
  for (let i = 0; i < runs; i++) {
    const out = join(work, `out-${i}`);
    time('kPull', kb(`pull ${far}/lat/signed:v1 -o oci:${out}-k:v1 --plain-http --no-signatures`));
    time('sPull', `skopeo copy -q --src-tls-verify=false docker://${far}/lat/signed:v1 oci:${out}-s:v1`);
    time('kPush', kb(`push oci:${image}:v1 ${far}/lat/k${i}:v1 --plain-http`));
    time('sPush', `skopeo copy -q --dest-tls-verify=false oci:${image}:v1 docker://${far}/lat/s${i}:v1`);
    time('verify', kb(`verify ${far}/lat/signed:v1 --key ${join(work, 'k.pub')} --plain-http`));
    time('install', kb(`install container://${far}/lat/signed:v1 --root ${out}-root --key ${join(work, 'k.pub')} --plain-http`));
    mustRun(kb(`push oci:${image}:v1 ${reg.host}/lat/unsigned${i}:v1 --plain-http`));
    time('sign', kb(`sign ${far}/lat/unsigned${i}:v1 --key ${join(work, 'k.key')} --plain-http`));
    rmSync(`${out}-k`, { recursive: true, force: true });
    rmSync(`${out}-s`, { recursive: true, force: true });
    rmSync(`${out}-root`, { recursive: true, force: true });
  }
  const ms = (key: string) => median(wall[key]!) * 1000;
  console.log(`bench/latency: registry ${2 * oneWayMs} ms of round trip away (and a handshake per connection), ${runs} runs each (interleaved), medians`);
  printTable([
    ['command', 'kbundle ms', 'skopeo copy ms'],
    ['pull (one-file image, no signatures)', ms('kPull').toFixed(0), ms('sPull').toFixed(0)],
    ['push (to a new repository)', ms('kPush').toFixed(0), ms('sPush').toFixed(0)],
    ['verify --key (both formats)', ms('verify').toFixed(0), '-'],
    ['install container:// --key', ms('install').toFixed(0), '-'],
    ['sign --key (both formats)', ms('sign').toFixed(0), '-'],
  ]);
  const rt = `${2 * oneWayMs} ms round trip`;
  emitResult({ work: `pull of a one-file image, ${rt}`, peer: 'skopeo copy', ratioWall: ms('kPull') / ms('sPull'), valueMs: ms('kPull'), target: '- (none set)' });
  emitResult({ work: `push of a one-file image, ${rt}`, peer: 'skopeo copy', ratioWall: ms('kPush') / ms('sPush'), valueMs: ms('kPush'), target: '- (none set)' });
  emitResult({ work: `verify --key of a signed image, ${rt}`, peer: '-', valueMs: ms('verify'), target: '- (none set)' });
  emitResult({ work: `install of a signed image, ${rt}`, peer: '-', valueMs: ms('install'), target: '- (none set)' });
  emitResult({ work: `sign --key (both formats), ${rt}`, peer: '-', valueMs: ms('sign'), target: '- (none set)' });
} finally {
  proxy.kill('SIGTERM');
  await reg.stop();
  rmSync(work, { recursive: true, force: true });
}
