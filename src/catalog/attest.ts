/**
 * The attestations `catalog publish --attest` attaches to each published bundle: an SBOM of every
 * platform image (SPDX or CycloneDX, read back from the built image as `build --sbom` does) and one
 * SLSA v1 provenance, all about the published digest, signed like publish's signatures and stored
 * the way `kbundle attest` stores them. A statement already attached (same type, same subjects, in
 * that format; with a key: signed by it) is not signed again, so republishing adds nothing.
 */
import type { KeyObject } from 'node:crypto';
import { attestImage, type AttestOptions } from '../attest/attest.js';
import { PredicateTypes } from '../attest/predicate.js';
import type { StatementSubject } from '../attach/formats.js';
import { UserError } from '../errors.js';
import type { Target } from '../oci/target.js';
import type { Descriptor } from '../oci/types.js';
import { cyclonedxDocument, platformImages, spdxDocument, type SbomFormat } from '../sbom/index.js';
import { collectInventory } from '../sbom/inventory.js';
import type { SignatureFormat } from '../sign/sign.js';
import type { OciLayout } from '../store/oci-layout.js';
import { signatureVerifies } from '../verify/evidence.js';
import { readAttachedStatements } from '../verify/attestations.js';
import type { CatalogEntryState } from './build.js';
import { provenancePredicate, type ProvenanceContext } from './provenance.js';

/** The annotation naming the platform of an index's image among a statement's subjects. */
export const PLATFORM_SUBJECT_ANNOTATION = 'org.opencontainers.image.platform';

export interface CatalogAttestOptions {
  /** How to sign (key or keyless, log, timestamps): publish's signing options. */
  signing: Omit<AttestOptions, 'predicate' | 'subjectName' | 'moreSubjects' | 'formats' | 'replace'>;
  formats: SignatureFormat[];
  sbomFormat: SbomFormat;
  context: ProvenanceContext;
}

export interface PublishedAttestation {
  predicateType: string;
  /** The platform image an SBOM describes. */
  platform?: string;
  format: SignatureFormat;
  location: string;
  /** False when an equal statement was already attached (nothing signed). */
  added: boolean;
}

interface Planned {
  type: string;
  platform?: string;
  json: string;
  subjects: StatementSubject[];
}

const digestSet = (digests: string[]) => [...new Set(digests)].sort().join(',');

function statementDigests(statement: Record<string, unknown>): string[] {
  const subjects = Array.isArray(statement.subject) ? (statement.subject as { digest?: Record<string, unknown> }[]) : [];
  return subjects.map((s) => (typeof s.digest?.sha256 === 'string' ? `sha256:${s.digest.sha256}` : '')).filter(Boolean);
}

/** The statements this bundle should carry. */
async function plan(layout: OciLayout, root: Descriptor, entry: CatalogEntryState, repository: string, opts: CatalogAttestOptions): Promise<Planned[]> {
  const facts = entry.provenance;
  if (!facts) throw new UserError(`${entry.name}: the catalog build recorded no provenance facts`, 'build it again with this kbundle: kbundle catalog build');
  const images = await platformImages(layout, root);
  const isIndex = images.length !== 1 || images[0]!.manifest.digest !== root.digest;
  const platformSubject = (platform: string, digest: string): StatementSubject[] => (isIndex ? [{ name: repository, digest, annotations: { [PLATFORM_SUBJECT_ANNOTATION]: platform } }] : []);
  const out: Planned[] = [];
  const sbomType = opts.sbomFormat === 'spdx' ? PredicateTypes.spdxjson : PredicateTypes.cyclonedx;
  for (const img of images) {
    const f = facts.sbom[img.platform];
    if (!f) throw new UserError(`${entry.name}: no SBOM facts recorded for ${img.platform}`, 'build it again with this kbundle: kbundle catalog build');
    const inv = await collectInventory(layout, img.manifest, img.platform, f);
    const doc = opts.sbomFormat === 'spdx' ? spdxDocument(inv) : cyclonedxDocument(inv);
    out.push({ type: sbomType, platform: img.platform, json: JSON.stringify(doc), subjects: platformSubject(img.platform, img.manifest.digest) });
  }
  out.push({
    type: PredicateTypes.slsaprovenance1,
    json: JSON.stringify(provenancePredicate(entry, facts, opts.context)),
    subjects: images.flatMap((i) => platformSubject(i.platform, i.manifest.digest)),
  });
  return out;
}

/**
 * Attach the SBOMs and the provenance of one published bundle (`root` in `target`, built into
 * `layout` as `entry`). Returns what was written or found already there.
 */
export async function attestBundle(layout: OciLayout, target: Target, root: Descriptor, entry: CatalogEntryState, repository: string, opts: CatalogAttestOptions): Promise<PublishedAttestation[]> {
  const planned = await plan(layout, root, entry, repository, opts);
  const publicKey: KeyObject | undefined = opts.signing.key?.publicKey;
  const existing = new Map<string, Awaited<ReturnType<typeof readAttachedStatements>>>();
  const out: PublishedAttestation[] = [];
  for (const p of planned) {
    if (!existing.has(p.type)) existing.set(p.type, await readAttachedStatements(target, root, p.type, opts.formats));
    const want = digestSet([root.digest, ...p.subjects.map((s) => s.digest)]);
    const present = new Map<SignatureFormat, string>();
    for (const s of existing.get(p.type)!) {
      if (digestSet(statementDigests(s.statement)) !== want) continue;
      // With a key, only a statement it signed counts; keyless certificates are not known in advance.
      if (publicKey && !signatureVerifies(s.evidence.signed, publicKey, s.evidence.signature)) continue;
      if (!present.has(s.format)) present.set(s.format, s.location);
    }
    for (const [format, location] of present) out.push({ predicateType: p.type, ...(p.platform ? { platform: p.platform } : {}), format, location, added: false });
    const missing = opts.formats.filter((f) => !present.has(f));
    if (missing.length === 0) continue;
    const r = await attestImage(target, root, { ...opts.signing, predicate: { type: p.type, json: p.json }, subjectName: repository, moreSubjects: p.subjects, formats: missing });
    for (const a of r.attestations) out.push({ predicateType: p.type, ...(p.platform ? { platform: p.platform } : {}), format: a.format, location: a.location, added: true });
  }
  return out;
}
