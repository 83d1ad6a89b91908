import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** systemd's version on a root, from its libsystemd-shared-NNN.so; undefined when not found. */
export async function detectSystemdVersion(root: string): Promise<number | undefined> {
  for (const dir of ['usr/lib/systemd', 'usr/lib/x86_64-linux-gnu/systemd', 'usr/lib/aarch64-linux-gnu/systemd', 'usr/lib64/systemd']) {
    try {
      for (const n of await readdir(join(root, dir))) {
        const m = /^libsystemd-shared-(\d+)(?:[.-].*)?\.so$/.exec(n);
        if (m) return Number(m[1]);
      }
    } catch {
      /* next */
    }
  }
  return undefined;
}

/**
 * The systemd version whose `systemd-repart --make-ddi=sysext` (what AuroraBoot runs) exists; its
 * built-in sysext/confext definitions format the root partition as erofs (`Format=erofs`).
 */
export const MAKE_DDI_SINCE = 255;

/**
 * The file system a build uses when none is chosen: erofs where the build host's systemd is new
 * enough to make DDIs itself (so the image is what AuroraBoot would make there), squashfs where it
 * is not (Debian 12's systemd 252 cannot format erofs partitions).
 */
export async function defaultFilesystem(root = '/'): Promise<{ fs: 'squashfs' | 'erofs'; systemd?: number }> {
  const systemd = await detectSystemdVersion(root);
  return { fs: systemd !== undefined && systemd >= MAKE_DDI_SINCE ? 'erofs' : 'squashfs', systemd };
}
