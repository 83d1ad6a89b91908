/**
 * The shared primitives: stage-and-rename writes (no partial file at the final path, no temp file
 * left after a failure, even a SIGKILL mid-write leaves the old content) and the bounded pool.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stageAndRename, writeFileAtomic } from '../src/util/atomic-write.js';
import { mapPool } from '../src/util/pool.js';
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

  it('a read-only directory is an error, not a partial file', async () => {
    if (process.getuid?.() === 0) {
      // root ignores directory permissions; an immutable-free stand-in: the target is a directory.
      const dir = tempDir();
      await expect(writeFileAtomic(dir, 'x')).rejects.toThrow();
      expect(readdirSync(join(dir, '..')).filter((n) => n.includes('.tmp-'))).toEqual([]);
      return;
    }
    const dir = tempDir();
    chmodSync(dir, 0o500);
    await expect(writeFileAtomic(join(dir, 'f'), 'x')).rejects.toThrow(/EACCES/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a process killed mid-write leaves the old content at the final path', async () => {
    const dir = tempDir();
    const p = join(dir, 'f');
    writeFileSync(p, 'old');
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
    expect(readFileSync(p, 'utf8')).toBe('old');
    // The staged leftover is recognisable as kbundle's temp sibling.
    expect(
      readdirSync(dir)
        .filter((n) => n !== 'f')
        .every((n) => /^f\.tmp-[0-9a-f]{12}$/.test(n)),
    ).toBe(true);
    expect(existsSync(p)).toBe(true);
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
});
