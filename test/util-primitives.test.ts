/**
 * The shared primitives: stage-and-rename writes (no partial file at the final path, no temp file
 * left after a failure, even a SIGKILL mid-write leaves the old content) and the bounded pool.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { commitFile, isStagingName, resetStaleSweep, stageAndRename, stageThenName, withStagingDir, writeFileAtomic } from '../src/util/atomic-write.js';
import { limiter, mapPool } from '../src/util/pool.js';
import { OffThreadHash, stopHashWorker } from '../src/util/hash-worker.js';
import { cleanupTempDirs, REPO_ROOT, tempDir } from './helpers/exec.js';

afterAll(cleanupTempDirs);

describe('stage and rename', () => {
  it('replaces the file whole, with the exact mode, and leaves no temp file', async () => {
    const dir = tempDir();
    const p = join(dir, 'f');
    writeFileSync(p, 'old');
    await writeFileAtomic(p, 'new content', { mode: 0o600 });
    expect(readFileSync(p, 'utf8')).toBe('new content');
    expect(readdirSync(dir)).toEqual(['f']);
    const { mode } = await import('node:fs').then((fs) => fs.statSync(p));
    expect(mode & 0o777).toBe(0o600);
  });

  it('a writer that fails half-way leaves the old file and no temp file', async () => {
    const dir = tempDir();
    const p = join(dir, 'f');
    writeFileSync(p, 'old');
    await expect(
      stageAndRename(p, async (tmp) => {
        writeFileSync(tmp, 'half');
        throw new Error('disk full');
      }),
    ).rejects.toThrow('disk full');
    expect(readFileSync(p, 'utf8')).toBe('old');
    expect(readdirSync(dir)).toEqual(['f']);
  });

  it('a writer whose stream fails mid-way leaves the old file and no temp file', async () => {
    const dir = tempDir();
    const p = join(dir, 'f');
    writeFileSync(p, 'old');
    const failing = new Readable({
      read() {
        this.push(Buffer.alloc(64 * 1024, 7));
        setImmediate(() => this.destroy(new Error('source reset')));
      },
    });
    await expect(stageAndRename(p, (tmp) => pipeline(failing, createWriteStream(tmp)))).rejects.toThrow('source reset');
    expect(readFileSync(p, 'utf8')).toBe('old');
    expect(readdirSync(dir)).toEqual(['f']);
  });

  it('a read-only directory is an error and leaves nothing (checked as an unprivileged user)', async () => {
    const dir = tempDir();
    chmodSync(dir, 0o555);
    const script = `
      import { writeFileAtomic } from ${JSON.stringify(join(REPO_ROOT, 'dist/src/util/atomic-write.js'))};
      try { await writeFileAtomic(${JSON.stringify(join(dir, 'f'))}, 'x'); process.stdout.write('wrote'); }
      catch (e) { process.stdout.write(e.code + ' ' + e.cause?.code + ' ' + e.message); }`;
    // root ignores directory permissions: the write runs as nobody when this suite runs as root.
    const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', ...asNobody });
    // An I/O error naming where it happened (a write through a file handle would carry no path).
    expect(r.stdout).toMatch(new RegExp(`^IO EACCES ${dir}/\\S+: permission denied \\(EACCES\\)$`));
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a rename that fails (a folder holds the final name) removes the temp file', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'f'));
    writeFileSync(join(dir, 'f', 'inside'), 'x');
    await expect(writeFileAtomic(join(dir, 'f'), 'new')).rejects.toThrow(/EISDIR|ENOTEMPTY|EEXIST/);
    expect(readdirSync(dir)).toEqual(['f']);
  });

  const killMidWrite = async (p: string): Promise<void> => {
    // A child that stages a large file slowly through the helper, killed before the rename.
    const script = `
      import { stageAndRename } from ${JSON.stringify(join(REPO_ROOT, 'dist/src/util/atomic-write.js'))};
      import { open } from 'node:fs/promises';
      await stageAndRename(${JSON.stringify(p)}, async (tmp) => {
        const fh = await open(tmp, 'w');
        for (let i = 0; ; i++) { await fh.write(Buffer.alloc(65536, 1)); if (i === 4) process.stdout.write('writing\\n'); await new Promise((r) => setTimeout(r, 5)); }
      });`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((res) => child.stdout.once('data', () => res()));
    child.kill('SIGKILL');
    await new Promise((res) => child.once('close', res));
  };

  it('a process killed mid-write leaves the old content, and the next write removes its temp file', async () => {
    const dir = tempDir();
    const p = join(dir, 'f');
    writeFileSync(p, 'old');
    await killMidWrite(p);
    expect(readFileSync(p, 'utf8')).toBe('old');
    // The leftover is recognisable as kbundle's temp sibling, named with the dead writer's pid.
    const left = readdirSync(dir).filter((n) => n !== 'f');
    expect(left).toHaveLength(1);
    expect(left[0]).toMatch(/^f\.tmp-\d+-[0-9a-f]{12}$/);
    expect(isStagingName(left[0]!)).toBe(true);
    // A young leftover may belong to a live writer in another pid namespace: kept.
    resetStaleSweep();
    await writeFileAtomic(join(dir, 'g'), 'g');
    expect(readdirSync(dir).sort()).toEqual(['f', 'g', left[0]].sort());
    // Once old, the next staged write into the folder removes it.
    const old = new Date(Date.now() - 5 * 60_000);
    utimesSync(join(dir, left[0]!), old, old);
    resetStaleSweep();
    await writeFileAtomic(p, 'new');
    expect(readdirSync(dir).sort()).toEqual(['f', 'g']);
    expect(readFileSync(p, 'utf8')).toBe('new');
  });

  it('a process killed mid-write of a new file leaves no file at the final path', async () => {
    const dir = tempDir();
    const p = join(dir, 'f');
    await killMidWrite(p);
    expect(existsSync(p)).toBe(false);
    expect(readdirSync(dir).every((n) => isStagingName(n))).toBe(true);
  });

  it('stageThenName puts content under the name it computed, temp gone', async () => {
    const dir = tempDir();
    const name = await stageThenName(
      dir,
      async (tmp) => {
        writeFileSync(tmp, 'blob');
        return 'by-digest';
      },
      (n) => join(dir, n),
    );
    expect(name).toBe('by-digest');
    expect(readdirSync(dir)).toEqual(['by-digest']);
  });

  it('withStagingDir removes its folder after success and failure, and sweeps folders of dead processes', async () => {
    const parent = tempDir();
    let seen = '';
    await withStagingDir(parent, 'build', async (d) => {
      seen = d;
      writeFileSync(join(d, 'x'), 'x');
      await commitFile(join(d, 'x'), join(parent, 'kept'));
    });
    expect(seen).toMatch(new RegExp(`/\\.kbundle-build-${process.pid}-[A-Za-z0-9]{6}$`));
    expect(readdirSync(parent)).toEqual(['kept']);
    await expect(withStagingDir(parent, 'build', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(readdirSync(parent)).toEqual(['kept']);
    // A folder left by a process that is gone (pid 2^22+1 is above Linux's pid_max), old enough.
    const dead = join(parent, '.kbundle-build-4194305-abcdef');
    mkdirSync(dead);
    writeFileSync(join(dead, 'partial'), 'x');
    const old = new Date(Date.now() - 5 * 60_000);
    utimesSync(dead, old, old);
    const live = join(parent, `.kbundle-build-${process.pid}-zzzzzz`);
    mkdirSync(live);
    utimesSync(live, old, old);
    resetStaleSweep();
    await withStagingDir(parent, 'build', async () => undefined);
    expect(readdirSync(parent).sort()).toEqual([`.kbundle-build-${process.pid}-zzzzzz`, 'kept']);
  });
});

describe('mapPool', () => {
  it('runs at most `limit` at once and keeps the order of results', async () => {
    let running = 0;
    let peak = 0;
    const out = await mapPool([5, 1, 4, 2, 3, 0], 2, async (n) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, n * 3));
      running--;
      return n * 10;
    });
    expect(out).toEqual([50, 10, 40, 20, 30, 0]);
    expect(peak).toBe(2);
  });

  it('starts nothing after the first failure, waits for what runs, and throws that failure', async () => {
    const started: number[] = [];
    let finished = 0;
    await expect(
      mapPool([0, 1, 2, 3, 4, 5], 2, async (n) => {
        started.push(n);
        await new Promise((r) => setTimeout(r, n === 0 ? 1 : 20));
        finished++;
        if (n === 0) throw new Error('first');
        if (n === 1) throw new Error('second');
      }),
    ).rejects.toThrow('first');
    expect(started).toEqual([0, 1]);
    expect(finished).toBe(2);
  });

  it('an aborted signal stops new work, and the running calls see it', async () => {
    const ctl = new AbortController();
    const started: number[] = [];
    const sawAbort: number[] = [];
    const run = mapPool(
      [0, 1, 2, 3, 4],
      2,
      async (n, _i, signal) => {
        started.push(n);
        if (n === 1) ctl.abort(new Error('cancelled'));
        await new Promise((r) => setTimeout(r, 10));
        if (signal.aborted) sawAbort.push(n);
      },
      { signal: ctl.signal },
    );
    await expect(run).rejects.toThrow('cancelled');
    expect(started).toEqual([0, 1]);
    expect(sawAbort.sort()).toEqual([0, 1]);
  });

  it('rejects a limit below 1 instead of running unbounded or not at all', async () => {
    await expect(mapPool([1], 0, async (n) => n)).rejects.toThrow(RangeError);
    expect(() => limiter(0)).toThrow(RangeError);
  });
});

describe('limiter', () => {
  it('never runs more than its limit while tasks keep arriving, and runs them all', async () => {
    const limit = limiter(2);
    let running = 0;
    let peak = 0;
    let done = 0;
    const task = (ms: number): Promise<void> =>
      limit(async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, ms));
        running--;
        done++;
      });
    // Each finished task starts another while the others still run or wait.
    await Promise.all([3, 1, 2, 0, 1].map((ms) => task(ms).then(() => task(ms))));
    expect(peak).toBe(2);
    expect(done).toBe(10);
  });

  it('passes results and failures through and frees the slot after a failure', async () => {
    const limit = limiter(1);
    await expect(limit(async () => Promise.reject(new Error('no')))).rejects.toThrow('no');
    await expect(limit(async () => 42)).resolves.toBe(42);
  });
});

describe('hash worker', () => {
  it('hashes as createHash does; a worker that stops fails the waiting hash with INTERNAL and later hashes run here', async () => {
    const data = randomBytes(5 * 1024 * 1024 + 17);
    const expected = createHash('sha256').update(data).digest('hex');
    const whole = new OffThreadHash('sha256');
    for (let at = 0; at < data.length; at += 300_000) whole.update(data.subarray(at, at + 300_000));
    expect(await whole.digest()).toBe(expected);

    const cut = new OffThreadHash('sha256');
    cut.update(data);
    await stopHashWorker();
    await expect(cut.digest()).rejects.toMatchObject({ name: 'KbError', code: 'INTERNAL' });
    const after = new OffThreadHash('sha256');
    after.update(data);
    expect(await after.digest()).toBe(expected);
  });
});
