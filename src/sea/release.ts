import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The platforms the node executable is made for, as OCI spells them. */
export type SeaPlatform = 'linux/amd64' | 'linux/arm64';

interface NodeRelease {
  version: string;
  packages: Record<SeaPlatform, { name: string; integrity: string }>;
}

/** src/sea/node-release.json, read from the source tree (the file is not compiled into dist). */
export const NODE_RELEASE: NodeRelease = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), '../../../src/sea/node-release.json'), 'utf8')) as NodeRelease;

export function executableName(platform: SeaPlatform): string {
  return `kbundle-${platform.replace('/', '-')}`;
}
