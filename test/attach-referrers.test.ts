/**
 * The one referrers module (src/attach/referrers.ts) against the real registry 2.8 (no referrers
 * API, so the `sha256-<hex>` fallback index) and an OCI layout: one entry per referrer, sorted by
 * digest, and no entry lost when writers overlap.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attachReferrer, listReferrers } from '../src/attach/referrers.js';
import { attachmentTag, referrersTag } from '../src/attach/tags.js';
import { digestOf } from '../src/oci/digest.js';
import { MediaType } from '../src/oci/mediatypes.js';
import { fetchBytes, type Target } from '../src/oci/target.js';
import type { Descriptor, Index } from '../src/oci/types.js';
import { RegistryClient } from '../src/registry/client.js';
import { RegistryTarget } from '../src/registry/registry-target.js';
import { copyImage } from '../src/store/copy.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { craftImage } from './helpers/craft-image.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';

const work = mkdtempSync(join(tmpdir(), 'kbundle-attach-'));
let reg: RegistryHandle;
let seq = 0;

beforeAll(async () => {
  reg = await startRegistry({ variant: 'open' });
});
afterAll(async () => {
  await reg?.stop();
  rmSync(work, { recursive: true, force: true });
});

const EMPTY = Buffer.from('{}');
const EMPTY_DESC: Descriptor = { mediaType: MediaType.OciEmpty, digest: digestOf(EMPTY), size: 2 };

/** A referrer manifest of `subject` (artifact manifest with the empty config), distinct per note. */
function referrer(subject: Descriptor, note: string): { bytes: Buffer; desc: Descriptor } {
  const bytes = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, artifactType: 'application/vnd.example+json', config: EMPTY_DESC, layers: [EMPTY_DESC], subject, annotations: { note } }),
  );
  return { bytes, desc: { mediaType: MediaType.OciManifest, digest: digestOf(bytes), size: bytes.length } };
}

/** The fallback index as stored (bytes read back from the store, not through listReferrers). */
async function storedIndex(target: Target, subject: Descriptor): Promise<Index> {
  const desc = await target.resolve(referrersTag(subject.digest));
  return JSON.parse((await fetchBytes(target, desc)).toString('utf8')) as Index;
}

/** A fresh image pushed to its own repository; returns the repository target and the image's descriptor. */
async function pushedImage(client: RegistryClient, name: string): Promise<{ repo: RegistryTarget; subject: Descriptor }> {
  const img = await craftImage(join(work, `${name}-${++seq}`), [[{ name: `f-${seq}`, content: `${name} ${seq}` }]], 'v1');
  const repo = new RegistryTarget(client, `attach/${name}-${seq}`, reg.host, { access: 'push' });
  const { root } = await copyImage(img.layout, 'v1', repo, 'v1');
  await repo.push(EMPTY_DESC, EMPTY);
  return { repo, subject: root };
}

describe('referrers fallback index', () => {
  it('stays complete and sorted when six attaches run at once through two clients', async () => {
    const a = new RegistryClient({});
    const b = new RegistryClient({});
    try {
      const { repo, subject } = await pushedImage(a, 'parallel');
      const other = new RegistryTarget(b, repo.repository, reg.host, { access: 'push' });
      const refs = Array.from({ length: 6 }, (_, i) => referrer(subject, `n${i}`));
      await Promise.all(refs.map((r, i) => attachReferrer(i % 2 ? other : repo, r.bytes, r.desc)));
      const index = await storedIndex(repo, subject);
      const want = refs.map((r) => r.desc.digest).sort();
      expect(index.manifests.map((d) => d.digest)).toEqual(want);
      expect(index.manifests.every((d) => d.artifactType === 'application/vnd.example+json')).toBe(true);
      // Attaching again changes nothing (same bytes, same digest of the index).
      const before = await repo.resolve(referrersTag(subject.digest));
      await attachReferrer(other, refs[3]!.bytes, refs[3]!.desc);
      expect((await repo.resolve(referrersTag(subject.digest))).digest).toBe(before.digest);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('re-reads and rewrites when another writer replaced the index between its write and its check', async () => {
    const client = new RegistryClient({});
    const elsewhere = new RegistryClient({});
    try {
      const { repo, subject } = await pushedImage(client, 'race');
      const first = referrer(subject, 'first');
      await attachReferrer(repo, first.bytes, first.desc);
      // Another process read the index when it held only `first`, and writes it with its own entry
      // right after ours lands: our entry is gone from the index that stands.
      const theirs = referrer(subject, 'theirs');
      const other = new RegistryTarget(elsewhere, repo.repository, reg.host, { access: 'push' });
      await other.push(theirs.desc, theirs.bytes);
      const theirIndex = Buffer.from(
        JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [first.desc, theirs.desc].map((d) => ({ ...d, artifactType: 'application/vnd.example+json' })) }),
      );
      const theirIndexDesc: Descriptor = { mediaType: MediaType.OciIndex, digest: digestOf(theirIndex), size: theirIndex.length };
      let raced = 0;
      const racing: Target = {
        name: `${repo.name} (racing)`,
        exists: (d) => repo.exists(d),
        fetch: (d): Promise<Readable> => repo.fetch(d),
        push: (d, c) => repo.push(d, c),
        resolve: (r) => repo.resolve(r),
        async tag(d, r) {
          await repo.tag(d, r);
          if (r === referrersTag(subject.digest) && raced++ === 0) {
            await other.push(theirIndexDesc, theirIndex);
            await other.tag(theirIndexDesc, r);
          }
        },
      };
      const mine = referrer(subject, 'mine');
      await attachReferrer(racing, mine.bytes, mine.desc);
      expect(raced).toBe(2); // our first write was replaced; the second one stands
      const index = await storedIndex(repo, subject);
      expect(index.manifests.map((d) => d.digest)).toEqual([first.desc.digest, theirs.desc.digest, mine.desc.digest].sort());
      expect((await listReferrers(repo, subject)).map((d) => d.digest)).toEqual(index.manifests.map((d) => d.digest));
    } finally {
      await client.close();
      await elsewhere.close();
    }
  });

  it('is the same format in an OCI layout: sorted, one entry per digest, found by listReferrers', async () => {
    const img = await craftImage(join(work, `layout-${++seq}`), [[{ name: 'a', content: 'a' }]], 'v1');
    const layout: OciLayout = img.layout;
    await layout.push(EMPTY_DESC, EMPTY);
    const refs = ['x', 'y', 'z', 'w'].map((n) => referrer(img.manifest, n));
    for (const r of refs) await attachReferrer(layout, r.bytes, r.desc);
    await attachReferrer(layout, refs[0]!.bytes, refs[0]!.desc);
    const index = await storedIndex(layout, img.manifest);
    expect(index.manifests.map((d) => d.digest)).toEqual(refs.map((r) => r.desc.digest).sort());
    expect(await listReferrers(layout, img.manifest, 'application/other')).toEqual([]);
  });
});

describe('copying attachments along', () => {
  it('looks up every tag and referrer list at once, then copies what it found in order', async () => {
    const img = await craftImage(join(work, `along-${++seq}`), [[{ name: 'along', content: 'along' }]], 'v1');
    // A cosign-style signature tag and an OCI referrer (fallback index) on the image.
    const sig = referrer(img.manifest, 'signature');
    await img.layout.push(sig.desc, sig.bytes);
    await img.layout.push(EMPTY_DESC, EMPTY);
    await img.layout.tag(sig.desc, attachmentTag(img.manifest.digest, 'sig'));
    const ref = referrer(img.manifest, 'referrer');
    await attachReferrer(img.layout, ref.bytes, ref.desc);

    // The source answers each lookup after 20 ms, counting how many wait at once.
    let waiting = 0;
    let most = 0;
    const slow = async <T>(call: () => Promise<T>): Promise<T> => {
      most = Math.max(most, ++waiting);
      await new Promise((r) => setTimeout(r, 20));
      waiting--;
      return call();
    };
    const src = new Proxy(img.layout, {
      get(target, key, receiver) {
        const v = Reflect.get(target, key, receiver) as unknown;
        if (key === 'resolve' && typeof v === 'function') return (reference: string) => slow(() => (v as Target['resolve']).call(target, reference));
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const dst = await OciLayout.open(join(work, `along-dst-${seq}`), { create: true });
    const result = await copyImage(src, 'v1', dst, 'v1', { attached: true });

    expect(most).toBeGreaterThan(1); // the three tag lookups and the fallback index lookup overlap
    expect(result.warnings).toEqual([]);
    expect(result.attached.map((a) => [a.kind, a.digest])).toEqual([
      ['tag', sig.desc.digest],
      ['referrer', ref.desc.digest],
    ]);
    expect((await dst.resolve(attachmentTag(img.manifest.digest, 'sig'))).digest).toBe(sig.desc.digest);
    expect((await listReferrers(dst, img.manifest)).map((d) => d.digest)).toEqual([ref.desc.digest]);
  });
});
