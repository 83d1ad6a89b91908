import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface FixtureFile {
  path: string;
  content?: string;
  mode?: number;
  symlink?: string;
}

/** Write a bundle folder: bundle.yaml plus files, created in the order given. */
export function writeBundle(dir: string, spec: string, files: FixtureFile[]): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'bundle.yaml'), spec);
  for (const f of files) {
    const p = join(dir, f.path);
    mkdirSync(dirname(p), { recursive: true });
    if (f.symlink !== undefined) symlinkSync(f.symlink, p);
    else {
      writeFileSync(p, f.content ?? '');
      if (f.mode !== undefined) chmodSync(p, f.mode);
    }
  }
  return dir;
}

export const CONTAINER_SPEC = `name: demo-tools
version: 1.2.3
description: demo container bundle
type: container
platforms: [linux/amd64, linux/arm64]
files:
  - src: tree
    dst: usr/local/share/demo
  - src: bin/tool.sh
    dst: usr/local/bin/tool
    mode: "0755"
platform_files:
  linux/amd64:
    - src: arch/amd64.txt
      dst: usr/local/share/arch.txt
  linux/arm64:
    - src: arch/arm64.txt
      dst: usr/local/share/arch.txt
`;

export const CONTAINER_FILES: FixtureFile[] = [
  { path: 'tree/a.txt', content: 'alpha\n' },
  { path: 'tree/sub/b.yaml', content: 'b: 1\n' },
  { path: 'tree/sub/deeper/c.bin', content: 'x'.repeat(70_000) },
  { path: 'tree/exec.sh', content: '#!/bin/sh\necho hi\n', mode: 0o775 },
  { path: 'tree/link', symlink: 'a.txt' },
  { path: 'bin/tool.sh', content: '#!/bin/sh\necho tool\n' },
  { path: 'arch/amd64.txt', content: 'amd64\n' },
  { path: 'arch/arm64.txt', content: 'arm64\n' },
];
