import type { Readable } from 'node:stream';
import { readAllCapped } from '../oci/digest.js';
import { MAX_MANIFEST_BYTES, type Descriptor } from '../oci/types.js';

/**
 * Content-addressed storage plus names (the oras-go "Target" idea). The OCI layout directory,
 * archives and the registry all implement it, so build → push → pull → install is one copy.
 */
export interface Target {
  /** Human-readable location for messages, e.g. `oci:out/oci` or `127.0.0.1:5000/foo`. */
  readonly name: string;
  exists(desc: Descriptor): Promise<boolean>;
  /** Bytes of a blob or manifest; the stream errors if they do not match `desc`. */
  fetch(desc: Descriptor): Promise<Readable>;
  /** Store content that must match `desc` (digest and size); nothing is kept if it does not. */
  push(desc: Descriptor, content: Readable | Buffer): Promise<void>;
  /** Tag name or digest → descriptor of a manifest or index. */
  resolve(reference: string): Promise<Descriptor>;
  /** Point `reference` (a tag) at an already stored manifest or index. */
  tag(desc: Descriptor, reference: string): Promise<void>;
}

export async function fetchBytes(target: Target, desc: Descriptor, limit = MAX_MANIFEST_BYTES): Promise<Buffer> {
  const s = await target.fetch(desc);
  return readAllCapped(s, limit, `${target.name}: ${desc.digest}`);
}
