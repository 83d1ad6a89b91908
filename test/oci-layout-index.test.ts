import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MediaType } from '../src/oci/mediatypes.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';

afterAll(cleanupTempDirs);

function manifestDesc(i: number) {
  return { mediaType: MediaType.OciManifest, digest: `sha256:${createHash('sha256').update(`m${i}`).digest('hex')}`, size: 100 + i };
}

describe("changes to a layout's index.json", () => {
  it('keeps every tag when many are written at once, through one or two objects on the folder', async () => {
    const dir = tempDir('kbundle-layout-index-');
    const a = await OciLayout.open(dir, { create: true });
    const b = await OciLayout.open(dir);
    const tags = Array.from({ length: 40 }, (_, i) => `t${i}`);
    await Promise.all(tags.map((t, i) => (i % 2 ? a : b).tag(manifestDesc(i), t)));
    expect((await a.tags()).sort()).toEqual([...tags].sort());
  });

  it('sorts after the tags asked before it, and a change that fails does not stop the next', async () => {
    const dir = tempDir('kbundle-layout-index-');
    const layout = await OciLayout.open(dir, { create: true });
    const written = [layout.tag(manifestDesc(2), 'b'), layout.tag(manifestDesc(1), 'a'), layout.sortIndex()];
    await Promise.all(written);
    expect(await layout.tags()).toEqual(['a', 'b']);

    const index = join(dir, 'index.json');
    const good = readFileSync(index);
    writeFileSync(index, '{');
    const failed = layout.tag(manifestDesc(3), 'c');
    await expect(failed).rejects.toThrow(/index\.json/);
    writeFileSync(index, good);
    await layout.tag(manifestDesc(4), 'd');
    expect(await layout.tags()).toEqual(['a', 'b', 'd']);
  });
});
