import type { ImageCapabilities, Target } from '../oci/target.js';
import type { Descriptor } from '../oci/types.js';
import type { RegistryClient } from '../registry/client.js';
import type { ImageReference } from '../registry/reference.js';
import type { RegistryTargetOptions } from '../registry/registry-target.js';
import type { OciLayout } from './oci-layout.js';

/** Image locations as skopeo spells them (containers-transports(5)). */
export type ImageLocation = LocalImageLocation | RegistryLocation;
export type LocalImageLocation = { transport: 'oci'; path: string; ref: string } | { transport: 'oci-archive'; path: string; ref: string } | { transport: 'docker-archive'; path: string; ref: string };
export type RegistryLocation = { transport: 'docker'; ref: string };
export type TransportName = ImageLocation['transport'];

/** An image location opened for reading or writing. */
export interface OpenedImage {
  target: Target;
  /** What to resolve (source) or tag (destination) inside `target`: a tag, a digest, or '' (layout default). */
  reference: string;
  /** The location as the user wrote it, normalised, for messages. */
  display: string;
  /** What the location can hold (its transport's capabilities). */
  capabilities: ImageCapabilities;
  /** Set for registry locations. */
  registryRef?: ImageReference;
  /** Local destinations: the OCI layout being written (a builder may write blobs into it directly). */
  layout?: OciLayout;
  /** Destinations: the tag (layouts, OCI archives, registries) or `name:tag` (docker archives) written; '' if none. */
  tag: string;
  /** Destinations: where the image lands, with that tag, for messages and results. */
  location: string;
  /**
   * Finish with the location: destinations that are archives are written now (`root` is what was
   * copied); temporary files are removed either way.
   */
  close(root?: Descriptor): Promise<void>;
}

export interface OpenOptions {
  /** Needed for registry locations (transports whose capabilities say `remote`). */
  client?: RegistryClient;
  registry?: RegistryTargetOptions;
}

export interface DestinationDefaults {
  /** Tag for layouts and OCI archives when the location names none (e.g. the source's tag). */
  defaultTag?: string;
  /** Image name (`host/repo`) for the RepoTags of a docker archive when the location names none. */
  defaultName?: string;
  /** `name:tag` for the RepoTags of a docker archive when the location names none (wins over defaultName). */
  defaultRepoTag?: string;
}

/**
 * One transport (containers/image `types.ImageTransport`): its syntax, what it can hold, and how
 * to read and write it. `src/store/transport.ts` holds the list and the one argument parser.
 */
export interface ImageTransport<L extends ImageLocation = ImageLocation> {
  readonly name: L['transport'];
  readonly capabilities: ImageCapabilities;
  /** Parse what follows `<name>:` (`input` is the whole argument, for messages). */
  parse(rest: string, input: string, what: string): L;
  format(loc: L): string;
  /** The name trust policies match: `registry/repository`, or `oci:<absolute dir>`. */
  identity(loc: L): string;
  openSource(loc: L, opts: OpenOptions): Promise<OpenedImage>;
  openDestination(loc: L, opts: OpenOptions & DestinationDefaults): Promise<OpenedImage>;
}
