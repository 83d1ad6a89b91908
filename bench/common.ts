import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { timeProcess, type ProcessTime } from './result.js';

export type Timed = ProcessTime;

/** Run a shell command under /usr/bin/time -v (bench/result.ts timeProcess). */
export const timeCommand = timeProcess;

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * A deterministic tree like a real bundle: many small YAML-ish files plus large blobs that are
 * half random (so gzip has real work), ~`totalMiB` in all. Generated once per size.
 */
export function generateTree(root: string, totalMiB: number): string {
  const dir = join(root, `tree-${totalMiB}m`);
  if (existsSync(join(dir, '.done'))) return dir;
  mkdirSync(dir, { recursive: true });
  let seed = createHash('sha256').update('kbundle-bench').digest();
  const random = (n: number): Buffer => {
    const parts: Buffer[] = [];
    let have = 0;
    while (have < n) {
      seed = createHash('sha256').update(seed).digest();
      parts.push(seed);
      have += seed.length;
    }
    return Buffer.concat(parts).subarray(0, n);
  };
  const small = 2000;
  for (let i = 0; i < small; i++) {
    const sub = join(dir, 'manifests', `group-${i % 40}`);
    mkdirSync(sub, { recursive: true });
    const body = Array.from({ length: 40 }, (_, j) => `key${j}: value-${i}-${j}-${'abcdefgh'.repeat(j % 5)}`).join('\n');
    writeFileSync(join(sub, `file-${i}.yaml`), `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-${i}\ndata:\n${body}\n`);
  }
  const bigCount = 20;
  // The small files take about 4 MiB; a smaller tree keeps them and has empty blobs (never a negative size).
  const bigSize = Math.max(0, Math.floor(((totalMiB - 4) * 1048576) / bigCount));
  mkdirSync(join(dir, 'blobs'), { recursive: true });
  for (let i = 0; i < bigCount; i++) {
    const half = Math.floor(bigSize / 2);
    const text = Buffer.alloc(bigSize - half, `line ${i} of some compressible log text\n`);
    writeFileSync(join(dir, 'blobs', `blob-${i}.bin`), Buffer.concat([random(half), text]));
  }
  writeFileSync(join(dir, '.done'), '');
  return dir;
}

export function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) console.log(r.map((cell, c) => cell.padEnd(widths[c]!)).join('  '));
}

/**
 * A tree for memory measurements: `totalMiB` in files of 64 MiB, each half random (crypto, not
 * reproducible: only the size matters here) and half text. Generated once per size.
 */
export function generateLargeTree(root: string, totalMiB: number): string {
  const dir = join(root, `large-tree-${totalMiB}m`);
  if (existsSync(join(dir, '.done'))) return dir;
  mkdirSync(dir, { recursive: true });
  const fileMiB = 64;
  for (let i = 0; i * fileMiB < totalMiB; i++) {
    const size = Math.min(fileMiB, totalMiB - i * fileMiB) * 1048576;
    const half = Math.floor(size / 2);
    writeFileSync(join(dir, `part-${String(i).padStart(3, '0')}.bin`), Buffer.concat([randomBytes(half), Buffer.alloc(size - half, `line ${i} of text\n`)]));
  }
  writeFileSync(join(dir, '.done'), '');
  return dir;
}
