import { UserError } from '../errors.js';
import { KINDS, type ExtensionKind } from '../kairos/extensions.js';

/** os-release(5) / extension-release fields, in file order. */
export type ReleaseFields = Map<string, string>;

/**
 * Parse an os-release style file the way systemd's parse_env_file() reads it: `KEY=VALUE` lines,
 * `#`/`;` comments, blank lines, single quotes literal, double quotes with backslash escapes,
 * unquoted values trimmed. Malformed lines are skipped (systemd ignores them too).
 */
export function parseReleaseFile(text: string): ReleaseFields {
  const out: ReleaseFields = new Map();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) continue;
    out.set(key, unquote(line.slice(eq + 1).trim()));
  }
  return out;
}

function unquote(v: string): string {
  let out = '';
  let i = 0;
  while (i < v.length) {
    const c = v[i]!;
    if (c === "'") {
      const end = v.indexOf("'", i + 1);
      if (end < 0) return out + v.slice(i + 1);
      out += v.slice(i + 1, end);
      i = end + 1;
    } else if (c === '"') {
      i++;
      while (i < v.length && v[i] !== '"') {
        if (v[i] === '\\' && i + 1 < v.length) i++;
        out += v[i];
        i++;
      }
      i++;
    } else if (c === '\\' && i + 1 < v.length) {
      out += v[i + 1];
      i += 2;
    } else if (c === '#' && (i === 0 || /\s/.test(v[i - 1]!))) {
      break;
    } else {
      out += c;
      i++;
    }
  }
  return out.trim();
}

/** Values kbundle writes: printable, single-line; quoted only when needed (os-release(5) style). */
function formatValue(v: string): string {
  if (/^[A-Za-z0-9_.:+,/@%-]*$/.test(v) && v !== '') return v;
  return `"${v.replace(/(["\\`$])/g, '\\$1')}"`;
}

/** Field values systemd compares literally: os-release(5) allows lowercase, digits, "._-" for IDs and levels. */
const ID_RE = /^[a-z0-9._-]+$/;

export interface ReleaseSpec {
  /** `ID=`; `_any` when none is given (as AuroraBoot writes it). */
  id?: string;
  versionId?: string;
  /** `SYSEXT_LEVEL=` (confext: `CONFEXT_LEVEL=`). */
  level?: string;
  /** systemd architecture name, or `_any`. */
  architecture?: string;
  /** `EXTENSION_RELOAD_MANAGER=1`: systemd reloads the service manager after merging. */
  reloadManager?: boolean;
  /** `SYSEXT_SCOPE=` (space separated: initrd, system, portable). */
  scope?: string[];
  /** Extra fields (e.g. SYSEXT_ID, SYSEXT_VERSION_ID); keys must be upper case. */
  extra?: Record<string, string>;
}

/** The extension-release file, fields in a fixed order, one per line, trailing newline. */
export function formatExtensionRelease(kind: ExtensionKind, spec: ReleaseSpec): string {
  const k = KINDS[kind];
  const id = spec.id ?? '_any';
  const check = (field: string, v: string | undefined, re = ID_RE) => {
    if (v !== undefined && !re.test(v)) throw new UserError(`${field}: "${v}" is not valid`, 'use lowercase letters, digits, ".", "_" and "-" (os-release(5))');
  };
  if (id !== '_any') check('--id', id);
  check('--version-id', spec.versionId, /^[A-Za-z0-9._~+-]+$/);
  check('--sysext-level', spec.level);
  const lines: [string, string][] = [['ID', id]];
  if (spec.versionId !== undefined) lines.push(['VERSION_ID', spec.versionId]);
  if (spec.level !== undefined) lines.push([k.levelKey, spec.level]);
  if (spec.architecture !== undefined) lines.push(['ARCHITECTURE', spec.architecture]);
  if (spec.scope?.length) {
    for (const s of spec.scope) if (!['initrd', 'system', 'portable'].includes(s)) throw new UserError(`scope: "${s}" must be initrd, system or portable`);
    lines.push([k.scopeKey, spec.scope.join(' ')]);
  }
  if (spec.reloadManager) lines.push(['EXTENSION_RELOAD_MANAGER', '1']);
  for (const [key, v] of Object.entries(spec.extra ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (!/^[A-Z][A-Z0-9_]*$/.test(key)) throw new UserError(`extension-release field "${key}" must be upper case (A-Z, 0-9, _)`);
    if (lines.some(([x]) => x === key)) throw new UserError(`extension-release field "${key}" is already set by its own option`);
    if (/[\n\r]/.test(v)) throw new UserError(`extension-release field "${key}" must be a single line`);
    lines.push([key, v]);
  }
  return lines.map(([key, v]) => `${key}=${formatValue(v)}\n`).join('');
}

/**
 * systemd's image_name_is_valid() plus what Kairos naming needs: the name becomes
 * `NAME.sysext.raw` and `extension-release.NAME`, and newer systemd cuts image names at "_" and "+"
 * (version separators), so those are refused here rather than silently breaking the match.
 */
export function validateExtensionName(name: string, where = '--name'): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]{0,127}$/.test(name)) {
    throw new UserError(`${where}: "${name}" is not a valid extension name`, 'use letters, digits, "." and "-", starting with a letter or digit ("_" and "+" are version separators to systemd)');
  }
  if (/\.(raw|sysext|confext)$/.test(name)) throw new UserError(`${where}: "${name}" must not end in .raw, .sysext or .confext`, 'give the bare name; kbundle adds .sysext.raw');
}

/**
 * The systemd version where image names lose `.sysext.raw`/`.confext.raw` and any `_`/`+` suffix
 * (path_extract_image_name, vpick era). Before it (e.g. Debian 12's 252), only `.raw` is stripped.
 */
export const MODERN_NAMES_SINCE = 256;
/** systemd also matches the host's ID_LIKE from this version on. */
export const ID_LIKE_SINCE = 258;

/** The image name systemd derives from a `.raw` file name, which `extension-release.NAME` must match. */
export function imageNameFromFile(fileName: string, systemdVersion: number): string {
  if (systemdVersion < MODERN_NAMES_SINCE) return fileName.endsWith('.raw') ? fileName.slice(0, -4) : fileName;
  let n = fileName;
  for (const sfx of ['.sysext.raw', '.confext.raw', '.raw']) {
    if (n.endsWith(sfx)) {
      n = n.slice(0, -sfx.length);
      break;
    }
  }
  const cut = n.search(/[_+]/);
  return cut >= 0 ? n.slice(0, cut) : n;
}

export interface HostRelease {
  fields: ReleaseFields;
  /** systemd's uname architecture name, e.g. x86-64. */
  architecture: string;
  /** `system` for systemd-sysext on a booted system, `initrd` in the initrd. */
  scope: string;
  systemdVersion: number;
}

export interface MatchResult {
  ok: boolean;
  /** Why (one sentence), in systemd's terms. */
  reason: string;
}

/**
 * extension_release_validate() (systemd src/shared/extension-util.c, extension-release.c in 252):
 * SYSEXT_SCOPE, ARCHITECTURE, ID (or `_any`, which skips version checks), then SYSEXT_LEVEL when
 * both sides have it, else VERSION_ID. `ID_LIKE` only counts on newer systemd.
 */
export function matchExtensionRelease(name: string, kind: ExtensionKind, host: HostRelease, ext: ReleaseFields): MatchResult {
  const k = KINDS[kind];
  const hostId = host.fields.get('ID') || 'linux';
  if (ext.size === 0) return { ok: false, reason: `extension-release.${name} carries no fields` };
  const scopeValue = ext.get(k.scopeKey);
  const scopes = scopeValue !== undefined ? scopeValue.split(/\s+/).filter(Boolean) : ['system', 'portable'];
  if (!scopes.includes(host.scope)) return { ok: false, reason: `${k.scopeKey}=${scopeValue ?? ''} does not include "${host.scope}"` };
  const arch = ext.get('ARCHITECTURE');
  if (arch && arch !== '_any' && arch !== host.architecture) return { ok: false, reason: `ARCHITECTURE=${arch}, but the node is ${host.architecture}` };
  const id = ext.get('ID');
  if (!id) return { ok: false, reason: `extension-release.${name} has no ID= (use ID=_any to match any OS)` };
  if (id === '_any') return { ok: true, reason: 'ID=_any matches any OS' };
  const idLike = host.systemdVersion >= ID_LIKE_SINCE ? (host.fields.get('ID_LIKE') ?? '').split(/\s+/).filter(Boolean) : [];
  if (id !== hostId && !idLike.includes(id)) {
    const like = idLike.length ? ` (ID_LIKE=${idLike.join(' ')})` : '';
    return { ok: false, reason: `ID=${id}, but the node's os-release has ID=${hostId}${like}` };
  }
  const hostVersion = host.fields.get('VERSION_ID') ?? '';
  const hostLevel = host.fields.get(k.levelKey) ?? '';
  if (!hostVersion && !hostLevel) return { ok: true, reason: `ID=${id} matches and the node has no VERSION_ID/${k.levelKey} (rolling release)` };
  const level = ext.get(k.levelKey) ?? '';
  if (hostLevel && level) {
    if (level !== hostLevel) return { ok: false, reason: `${k.levelKey}=${level}, but the node has ${k.levelKey}=${hostLevel}` };
    return { ok: true, reason: `ID=${id} and ${k.levelKey}=${level} match` };
  }
  if (hostVersion) {
    const version = ext.get('VERSION_ID') ?? '';
    if (!version) return { ok: false, reason: `no VERSION_ID= (nor a ${k.levelKey}= the node also has), but the node has VERSION_ID=${hostVersion}` };
    if (version !== hostVersion) return { ok: false, reason: `VERSION_ID=${version}, but the node has VERSION_ID=${hostVersion}` };
    return { ok: true, reason: `ID=${id} and VERSION_ID=${version} match` };
  }
  return { ok: true, reason: `ID=${id} matches and the node has no VERSION_ID (rolling release)` };
}
