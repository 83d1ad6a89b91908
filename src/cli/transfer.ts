import type { Command } from 'commander';
import { UserError, errorMessage } from '../errors.js';
import { isDigest } from '../oci/digest.js';
import { MediaType, isIndexMediaType, isManifestMediaType } from '../oci/mediatypes.js';
import { formatPlatform, parsePlatform, selectPlatform } from '../oci/platform.js';
import { parseAnyManifest, type Descriptor, type Platform } from '../oci/types.js';
import { parseReference, pinnedReference } from '../registry/reference.js';
import { copyImage, type CopyHooks, type CopyResult } from '../store/copy.js';
import { requireSinglePlatform } from '../store/docker-archive.js';
import { openDestination, openSource, type DestinationDefaults, type OpenedImage } from '../store/open.js';
import { fetchBytes, resolveAndRead, type Target } from '../oci/target.js';
import { isRegistryLocation, parseImageArgument, type ImageLocation } from '../store/transport.js';
import type { CliIo } from './io.js';
import { makePrinter, type Printer } from './output.js';
import { makeClient, registryOptions, type RegistryFlags } from './registry-flags.js';
import { describeSigned, prepareSigning } from './sign.js';
import { addSigningFlags, type SigningFlags } from './signing-options.js';

function platformOf(o: RegistryFlags): Platform | undefined {
  return o.platform ? parsePlatform(o.platform, '--platform') : undefined;
}

/** Bytes of every blob the copy will visit (manifests only are read), for one overall progress bar. */
async function plannedBytes(target: Target, root: Descriptor, platform: Platform | undefined): Promise<number> {
  const seen = new Set<string>();
  let total = 0;
  const walk = async (desc: Descriptor, top: boolean): Promise<void> => {
    const parsed = parseAnyManifest(await fetchBytes(target, desc), desc.mediaType, `${target.name}@${desc.digest}`);
    if (parsed.kind === 'index') {
      const children = top && platform ? [selectPlatform(parsed.index.manifests, platform, target.name)] : parsed.index.manifests;
      for (const c of children) if (isManifestMediaType(c.mediaType) || isIndexMediaType(c.mediaType)) await walk(c, false);
      return;
    }
    for (const b of [parsed.manifest.config, ...parsed.manifest.layers]) {
      if (seen.has(b.digest)) continue;
      seen.add(b.digest);
      total += b.size;
    }
  };
  await walk(root, true);
  return total;
}

/** One TTY progress bar for the whole transfer (nothing when piped or with --json). */
function progressReporter(out: Printer, total: number, label: string): { hooks: CopyHooks; stop(): void } {
  const bar = out.progress(total, label);
  return {
    hooks: {
      onBytes: (_desc, n) => bar.add(n),
      onCopySkipped: (desc) => bar.add(desc.size),
      onMounted: (desc) => bar.add(desc.size),
      onRetry: (desc, e) => out.info(`\nretrying ${desc.digest}: ${errorMessage(e)}`),
    },
    stop: () => bar.stop(),
  };
}

function tagOf(src: OpenedImage): string | undefined {
  if (src.registryRef) return src.registryRef.tag ?? (src.registryRef.digest ? undefined : 'latest');
  return src.reference && !isDigest(src.reference) ? src.reference : undefined;
}

interface Transfer {
  src: OpenedImage;
  result: CopyResult;
  /** Where the image landed, with its tag. */
  location: string;
}

/** Open both ends, copy, finish the destination; temporary files are removed whatever happens. */
async function transfer(
  srcLoc: ImageLocation,
  dstLoc: ImageLocation,
  o: RegistryFlags & { signatures?: boolean },
  out: Printer,
  label: string,
  afterCopy?: (dst: OpenedImage, result: CopyResult) => Promise<void>,
): Promise<Transfer> {
  const client = await makeClient(o, out.io);
  let src: OpenedImage | undefined;
  let dst: OpenedImage | undefined;
  try {
    src = await openSource(srcLoc, { client });
    const defaults: DestinationDefaults = { defaultTag: tagOf(src), defaultName: src.registryRef ? `${src.registryRef.registry}/${src.registryRef.repository}` : undefined };
    dst = await openDestination(dstLoc, { client, ...defaults });
    const platform = platformOf(o);
    if (!dst.capabilities.multiPlatform && !platform) {
      // Fail before transferring anything when the destination could not hold the image.
      await requireSinglePlatform(src.target, await src.target.resolve(src.reference), dst.display);
    }
    let total = 0;
    if (out.tty) total = await plannedBytes(src.target, await src.target.resolve(src.reference), platform).catch(() => 0);
    const progress = progressReporter(out, total, label);
    let result: CopyResult;
    try {
      // Signatures and attestations travel with the image unless --no-signatures, or the
      // destination has nowhere to keep them (a docker archive).
      const attached = o.signatures !== false && dst.capabilities.signatures;
      result = await copyImage(src.target, src.reference, dst.target, dst.reference, { platform, hooks: progress.hooks, attached });
    } finally {
      progress.stop();
    }
    for (const w of result.warnings) out.warn(w);
    if (afterCopy) await afterCopy(dst, result);
    await dst.close(result.root);
    const { location } = dst;
    dst = undefined;
    return { src, result, location };
  } finally {
    await dst?.close().catch(() => undefined);
    await src?.close().catch(() => undefined);
    await client.close();
  }
}

function summary(result: CopyResult): Record<string, unknown> {
  return {
    blobsCopied: result.blobsCopied,
    blobsSkipped: result.blobsSkipped,
    blobsMounted: result.blobsMounted,
    manifestsCopied: result.manifestsCopied,
    bytesCopied: result.bytesCopied,
    attached: result.attached,
  };
}

function statsLine(r: CopyResult): string {
  const mib = (r.bytesCopied / 1048576).toFixed(1);
  const attached = r.attached.length
    ? `; ${r.attached.length} signature/attestation artifact(s) along (${r.attached.map((a) => (a.kind === 'tag' ? a.name : `referrer ${a.digest.slice(0, 19)}`)).join(', ')})`
    : '';
  return `${r.blobsCopied} blob(s) copied (${mib} MiB), ${r.blobsSkipped} already there${r.blobsMounted ? `, ${r.blobsMounted} mounted` : ''}${attached}`;
}

// ---------------------------------------------------------------------------------------------
// inspect
// ---------------------------------------------------------------------------------------------

interface ImageSummary {
  platform?: string;
  digest: string;
  mediaType: string;
  size: number;
  artifactType?: string;
  config?: { digest: string; mediaType: string; size: number };
  layers?: Array<{ digest: string; mediaType: string; size: number }>;
  layersSize?: number;
}

async function describeManifest(target: Target, desc: Descriptor): Promise<ImageSummary> {
  const s: ImageSummary = { digest: desc.digest, mediaType: desc.mediaType, size: desc.size };
  if (desc.platform) s.platform = formatPlatform(desc.platform);
  if (!isManifestMediaType(desc.mediaType)) return s;
  const parsed = parseAnyManifest(await fetchBytes(target, desc), desc.mediaType, `${target.name}@${desc.digest}`);
  if (parsed.kind !== 'manifest') return s;
  const m = parsed.manifest;
  if (m.artifactType) s.artifactType = m.artifactType;
  s.config = { digest: m.config.digest, mediaType: m.config.mediaType, size: m.config.size };
  s.layers = m.layers.map((l) => ({ digest: l.digest, mediaType: l.mediaType, size: l.size }));
  s.layersSize = m.layers.reduce((n, l) => n + l.size, 0);
  if (!s.platform && m.config.size < 1 << 20 && (m.config.mediaType === MediaType.OciConfig || m.config.mediaType === MediaType.DockerConfig)) {
    try {
      const cfg = JSON.parse((await fetchBytes(target, m.config, 1 << 20)).toString('utf8')) as { os?: string; architecture?: string; variant?: string };
      if (cfg.os && cfg.architecture) s.platform = formatPlatform({ os: cfg.os, architecture: cfg.architecture, variant: cfg.variant });
    } catch {
      /* not an image config: leave the platform out */
    }
  }
  return s;
}

function humanSize(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

function inspectText(where: string, root: Descriptor, images: ImageSummary[], annotations: Record<string, string> | undefined): string {
  const lines = [`${where}`, `  digest:     ${root.digest}`, `  media type: ${root.mediaType}`, `  size:       ${root.size} B`];
  for (const [k, v] of Object.entries(annotations ?? {})) lines.push(`  ${k}: ${v}`);
  for (const i of images) {
    lines.push(`  ${i.platform ?? '(no platform)'}: ${i.digest}${i.artifactType ? ` [${i.artifactType}]` : ''}`);
    for (const l of i.layers ?? []) lines.push(`    layer ${l.digest} ${humanSize(l.size)} ${l.mediaType}`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// commands
// ---------------------------------------------------------------------------------------------

export function registerTransfer(program: Command, io: CliIo): void {
  const push = registryOptions(
    program
      .command('push')
      .description('push a local image (OCI layout or archive) to a registry; prints host/repo@sha256:…')
      .argument('<source>', 'oci:<dir>[:tag] | oci-archive:<file>[:tag] | docker-archive:<file>[:name:tag]')
      .argument('<reference>', 'registry reference, e.g. 127.0.0.1:5000/kairos/metallb:0.14.9 (docker:// optional)')
      .option('--platform <os/arch>', 'push only this platform out of a multi-platform image')
      .option('--no-signatures', 'leave signatures and attestations attached to the image behind'),
  );
  addSigningFlags(push);
  push.action(async (source: string, reference: string, o: RegistryFlags & SigningFlags & { sign?: boolean; signatures?: boolean }) => {
    const out = makePrinter(!!o.json, io);
    const srcLoc = parseImageArgument(source, 'source');
    if (isRegistryLocation(srcLoc)) throw new UserError(`push: source "${source}" is a registry reference`, `to copy between registries use: kbundle copy ${source} ${reference}`);
    const dstLoc = parseImageArgument(reference, 'reference');
    if (!isRegistryLocation(dstLoc)) throw new UserError(`push: "${reference}" is not a registry reference`, `to write a local image use: kbundle copy ${source} ${reference}`);
    const ref = parseReference(dstLoc.ref);
    // The key is unlocked before anything is pushed: a wrong password leaves no unsigned image.
    const signer = o.sign ? await prepareSigning(o, io) : undefined;
    let signed: string[] = [];
    const { result, src } = await transfer(srcLoc, dstLoc, o, out, 'push', async (dst, copied) => {
      if (!signer) return;
      const r = await signer.sign(dst.target, copied.root, { dockerReference: `${ref.registry}/${ref.repository}` });
      signed = describeSigned(r);
    });
    const pinned = pinnedReference(ref, result.root.digest);
    out.info(`pushed ${src.display} → ${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}: ${statsLine(result)}`);
    if (signed.length) out.info(`signed ${pinned}\n${signed.join('\n')}`);
    out.result(pinned, {
      reference: pinned,
      digest: result.root.digest,
      mediaType: result.root.mediaType,
      size: result.root.size,
      tag: ref.tag ?? (ref.digest ? undefined : 'latest'),
      signed: signed.length > 0,
      ...summary(result),
    });
  });

  registryOptions(
    program
      .command('pull')
      .description('pull an image from a registry into an OCI layout or archive')
      .argument('<reference>', 'registry reference, e.g. 127.0.0.1:5000/kairos/metallb:0.14.9')
      .option('-o, --output <location>', 'oci:<dir>[:tag] | oci-archive:<file>[:tag] | docker-archive:<file>[:name:tag]', 'oci:out/oci')
      .option('--platform <os/arch>', 'pull only this platform out of a multi-platform image')
      .option('--no-signatures', 'leave signatures and attestations attached to the image behind'),
  ).action(async (reference: string, o: RegistryFlags & { output: string; signatures?: boolean }) => {
    const out = makePrinter(!!o.json, io);
    const srcLoc = parseImageArgument(reference, 'reference');
    if (!isRegistryLocation(srcLoc)) throw new UserError(`pull: "${reference}" is not a registry reference`, `to copy local images use: kbundle copy ${reference} ${o.output}`);
    const dstLoc = parseImageArgument(o.output, '-o');
    const { result, src, location: where } = await transfer(srcLoc, dstLoc, o, out, 'pull');
    out.info(`pulled ${src.display}: ${statsLine(result)}`);
    out.result(`${where}\ndigest: ${result.root.digest}`, { location: where, digest: result.root.digest, mediaType: result.root.mediaType, size: result.root.size, ...summary(result) });
  });

  registryOptions(
    program
      .command('copy')
      .description('copy an image between any two locations (registry, OCI layout, OCI or docker archive)')
      .argument('<source>', 'oci:… | oci-archive:… | docker-archive:… | docker://host/repo:tag | host/repo:tag')
      .argument('<destination>', 'same forms as the source')
      .option('--platform <os/arch>', 'copy only this platform out of a multi-platform image')
      .option('--no-signatures', 'leave signatures and attestations attached to the image behind'),
  ).action(async (source: string, destination: string, o: RegistryFlags & { signatures?: boolean }) => {
    const out = makePrinter(!!o.json, io);
    const srcLoc = parseImageArgument(source, 'source');
    const dstLoc = parseImageArgument(destination, 'destination');
    const { result, src, location: where } = await transfer(srcLoc, dstLoc, o, out, 'copy');
    const pinned = isRegistryLocation(dstLoc) ? pinnedReference(parseReference(dstLoc.ref), result.root.digest) : undefined;
    out.info(`copied ${src.display} → ${where}: ${statsLine(result)}`);
    out.result(pinned ?? `${where}\ndigest: ${result.root.digest}`, {
      location: where,
      reference: pinned,
      digest: result.root.digest,
      mediaType: result.root.mediaType,
      size: result.root.size,
      ...summary(result),
    });
  });

  registryOptions(
    program
      .command('inspect')
      .description('show an image: media type, digest, platforms, layer sizes')
      .argument('<image>', 'host/repo:tag | docker://… | oci:<dir>[:tag] | oci-archive:… | docker-archive:…')
      .option('--raw', 'print the root manifest bytes as stored'),
  ).action(async (image: string, o: RegistryFlags & { raw?: boolean }) => {
    const out = makePrinter(!!o.json, io);
    const loc = parseImageArgument(image, 'image');
    const client = await makeClient(o, io);
    const src = await openSource(loc, { client });
    try {
      const { desc: root, bytes } = await resolveAndRead(src.target, src.reference);
      if (o.raw) {
        out.raw(bytes);
        return;
      }
      const parsed = parseAnyManifest(bytes, root.mediaType, `${src.display}@${root.digest}`);
      const images: ImageSummary[] = [];
      if (parsed.kind === 'index') {
        for (const d of parsed.index.manifests) images.push(await describeManifest(src.target, d));
      } else {
        images.push(await describeManifest(src.target, root));
      }
      const annotations = parsed.kind === 'index' ? parsed.index.annotations : parsed.manifest.annotations;
      const where = src.registryRef ? pinnedReference(src.registryRef, root.digest) : src.display;
      out.result(inspectText(where, root, images, annotations), {
        reference: where,
        digest: root.digest,
        mediaType: root.mediaType,
        size: root.size,
        annotations: annotations ?? {},
        platforms: images.map((i) => i.platform).filter(Boolean),
        manifests: images,
      });
    } finally {
      await src.close();
      await client.close();
    }
  });
}
