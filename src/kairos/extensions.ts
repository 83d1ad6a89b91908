import { UserError } from '../errors.js';

/** The two kinds of extension image systemd merges: /usr + /opt (sysext) or /etc (confext). */
export type ExtensionKind = 'sysext' | 'confext';

export interface KindInfo {
  kind: ExtensionKind;
  /** Top-level directories systemd merges from this kind (SYSTEMD_SYSEXT_HIERARCHIES defaults). */
  hierarchies: readonly string[];
  /** Directory, inside the image, of the release file. */
  releaseDir: string;
  /** `SYSEXT_LEVEL` / `CONFEXT_LEVEL`. */
  levelKey: string;
  /** `SYSEXT_SCOPE` / `CONFEXT_SCOPE`. */
  scopeKey: string;
  /** File suffix kairos-agent and AuroraBoot use: `NAME.sysext.raw`. */
  suffix: string;
  /** kairos-agent's store, relative to the node root. */
  storeDir: string;
  /** Where immucore (and `--now`) link enabled images for systemd. */
  runDir: string;
  /** The systemd unit `--now` restarts. */
  unit: string;
  /** Debian package name of the unit's binary, for messages. */
  command: string;
}

export const KINDS: Record<ExtensionKind, KindInfo> = {
  sysext: {
    kind: 'sysext',
    hierarchies: ['usr', 'opt'],
    releaseDir: 'usr/lib/extension-release.d',
    levelKey: 'SYSEXT_LEVEL',
    scopeKey: 'SYSEXT_SCOPE',
    suffix: '.sysext.raw',
    storeDir: 'var/lib/kairos/extensions',
    runDir: 'run/extensions',
    unit: 'systemd-sysext',
    command: 'systemd-sysext',
  },
  confext: {
    kind: 'confext',
    hierarchies: ['etc'],
    releaseDir: 'etc/extension-release.d',
    levelKey: 'CONFEXT_LEVEL',
    scopeKey: 'CONFEXT_SCOPE',
    suffix: '.confext.raw',
    storeDir: 'var/lib/kairos/confexts',
    runDir: 'run/confexts',
    unit: 'systemd-confext',
    command: 'systemd-confext',
  },
};

/** kairos-agent's boot-state folders (pkg/action/sysext.go `dirFromBootState`). */
export const BOOT_STATES = ['active', 'passive', 'recovery', 'common'] as const;
export type BootState = (typeof BOOT_STATES)[number];

/** Architecture names as systemd spells them (`ARCHITECTURE=`, `uname_architecture()`), from OCI/Go names. */
const GO_TO_SYSTEMD: Record<string, string> = {
  amd64: 'x86-64',
  arm64: 'arm64',
  arm: 'arm',
  '386': 'x86',
  ppc64le: 'ppc64-le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loongarch64',
};
const NODE_TO_SYSTEMD: Record<string, string> = { x64: 'x86-64', arm64: 'arm64', arm: 'arm', ia32: 'x86', ppc64: 'ppc64-le', s390x: 's390x', riscv64: 'riscv64', loong64: 'loongarch64' };
const SYSTEMD_ARCHES = new Set(Object.values(GO_TO_SYSTEMD));

/** Accept `x86-64`, `amd64`, `linux/amd64`, … and return systemd's name; `_any` stays `_any`. */
export function systemdArch(input: string, where = '--arch'): string {
  const s = input.startsWith('linux/') ? input.slice(6).split('/')[0]! : input;
  if (s === '_any') return s;
  if (SYSTEMD_ARCHES.has(s)) return s;
  const mapped = GO_TO_SYSTEMD[s] ?? (s === 'x86_64' ? 'x86-64' : s === 'aarch64' ? 'arm64' : undefined);
  if (!mapped) throw new UserError(`${where}: unknown architecture "${input}"`, `use one of: ${[...SYSTEMD_ARCHES].join(', ')} (or amd64/arm64…, or _any)`);
  return mapped;
}

export function hostSystemdArch(): string {
  return NODE_TO_SYSTEMD[process.arch] ?? process.arch;
}
