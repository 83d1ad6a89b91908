import { existsSync, readdirSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { isAbsolute, join, posix, resolve } from 'node:path';
import { UserError } from '../errors.js';
import { SourceFolder } from '../layer/source-folder.js';
import { parseDockerfile, type Dockerfile, type Instruction, type Stage } from './parse.js';

/**
 * What kbundle takes from a kairos-io/community-bundles style folder: a Dockerfile whose final
 * stage is `FROM scratch` followed only by `COPY` of files in the folder (run.sh, assets/).
 * Anything that would need a container runtime or the network at build time (RUN, ADD of a URL,
 * COPY --from a build stage or image) is refused with the line and what to write in
 * bundle.yaml instead; so is what would change the image config rather than its files.
 */

export interface CopySource {
  /** Absolute path in the folder (resolved by the folder's SourceFolder: no symlink above or at it). */
  path: string;
  /** As written (for messages). */
  given: string;
}

export interface CopyStep {
  line: number;
  /** The instruction as written, e.g. `COPY ./assets /assets` (history's created_by). */
  text: string;
  sources: CopySource[];
  /** Absolute destination in the image, normalised ("/" for the root). */
  dest: string;
  /** The destination names a directory: it ends in "/", or there are several sources. */
  destIsDir: boolean;
  /** --chmod: mode of every copied file and folder. */
  chmod?: number;
  uid: number;
  gid: number;
}

export interface Translation {
  dir: string;
  /** The folder every COPY source is read through (src/builder/source-path.ts). */
  folder: SourceFolder;
  dockerfile: Dockerfile;
  /** One per COPY of the final stage, in order: one image layer each, as Docker builds it. */
  steps: CopyStep[];
}

const HINT_URL = 'pin the download in bundle.yaml instead: `url:` + `sha256:` (and `extract: <member>` for a tar/tar.gz archive), see bundles/README.md';

function refuse(df: Dockerfile, ins: Instruction, why: string, hint: string): UserError {
  return new UserError(`${df.path}:${ins.line}: ${ins.text}: ${why}`, hint);
}

/** What a build stage fetches or runs, for the message refusing a COPY --from it. */
function describeStage(stage: Stage): string {
  const urls = new Set<string>();
  const runs: number[] = [];
  for (const ins of stage.instructions) {
    if (ins.keyword === 'RUN') runs.push(ins.line);
    for (const m of [ins.text, ...ins.heredocs].join('\n').matchAll(/https?:\/\/[^\s"'`)]+/g)) urls.add(m[0]);
  }
  const parts: string[] = [];
  if (runs.length) parts.push(`runs commands (RUN at line ${runs.join(', ')})`);
  if (urls.size) parts.push(`downloads ${[...urls].slice(0, 3).join(', ')}${urls.size > 3 ? ', …' : ''}`);
  return parts.length ? parts.join(' and ') : `starts FROM ${stage.base}`;
}

/** Match one path segment against a Dockerfile glob (`*`, `?`, `[…]`). */
function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        re += `[${glob
          .slice(i + 1, end)
          .replace(/^!/, '^')
          .replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/**
 * Resolve one COPY source inside the folder (globs in the last segment only). Named sources are
 * followed when they are symlinks, as Docker does, but only while they stay inside the folder.
 */
function resolveSources(folder: SourceFolder, df: Dockerfile, ins: Instruction, given: string): CopySource[] {
  if (given.includes('$')) throw refuse(df, ins, `the source "${given}" uses a variable`, 'write the path literally (kbundle does not evaluate ARG/ENV)');
  const clean = posix.normalize(given.replace(/^\/+/, '') || '.');
  if (clean === '..' || clean.startsWith('../') || isAbsolute(clean)) throw refuse(df, ins, `the source "${given}" is outside the build context`, 'COPY takes files from the bundle folder only');
  const what = `${df.path}:${ins.line}: ${ins.text}`;
  const resolveIn = (p: string) => folder.resolve(p, what, { followFinal: true, shown: `the source "${given}"` });
  const parent = posix.dirname(clean);
  const base = posix.basename(clean);
  if (/[*?[]/.test(parent)) throw refuse(df, ins, `the source "${given}" has a wildcard in a folder name`, 'use wildcards in the last path segment only, or name the folder');
  if (/[*?[]/.test(base)) {
    const from = resolveIn(parent);
    let names: string[] = [];
    if (folder.lstat(from)?.isDirectory()) names = readdirSync(from).sort();
    const re = globToRegExp(base);
    const hits = names.filter((n) => re.test(n)).map((n) => ({ path: resolveIn(posix.join(parent, n)), given: posix.join(parent, n) }));
    if (!hits.length) throw refuse(df, ins, `no file matches "${given}"`, 'Docker fails on a COPY source that matches nothing, too');
    return hits;
  }
  const path = resolveIn(clean);
  if (!folder.lstat(path)) throw refuse(df, ins, `the source "${given}" does not exist in ${folder.root}`, 'sources are relative to the folder holding the Dockerfile');
  return [{ path, given }];
}

function parseChmod(df: Dockerfile, ins: Instruction, v: string): number {
  if (!/^[0-7]{3,4}$/.test(v)) throw refuse(df, ins, `--chmod=${v} is not an octal mode`, 'use an octal mode such as --chmod=0755');
  return parseInt(v, 8);
}

function parseChown(df: Dockerfile, ins: Instruction, v: string): { uid: number; gid: number } {
  const m = /^(\d+)(?::(\d+))?$/.exec(v);
  if (!m) throw refuse(df, ins, `--chown=${v} names a user or group`, 'use numeric ids (--chown=0:0): a scratch image has no /etc/passwd to look names up in');
  return { uid: Number(m[1]), gid: Number(m[2] ?? m[1]) };
}

const ARCHIVE_NAME = /\.(tar|tgz|tar\.gz|tar\.bz2|tbz2?|tar\.xz|txz|tar\.zst)$/i;

export async function translateDockerfile(dirArg: string): Promise<Translation> {
  const dir = resolve(dirArg);
  const path = join(dirArg, 'Dockerfile');
  const notFound = () => new UserError(`${path}: not found`, 'a community bundle folder has a Dockerfile, run.sh and assets/; a kbundle folder has a bundle.yaml');
  let folder: SourceFolder;
  try {
    folder = new SourceFolder(dir);
  } catch {
    throw notFound();
  }
  // The Dockerfile is read like every source: no symlink out of the folder, no FIFO.
  const dockerfile = folder.resolve('Dockerfile', path, { followFinal: true });
  if (!folder.lstat(dockerfile)) throw notFound();
  const text = folder.readFile(dockerfile, path).toString('utf8');
  if (existsSync(join(dir, '.dockerignore'))) {
    throw new UserError(`${join(dirArg, '.dockerignore')}: .dockerignore is not supported`, 'remove the files it excludes from the folder (or the COPY sources that name them) and delete it');
  }
  const df = parseDockerfile(text, path);
  const final = df.stages.at(-1)!;
  if (final.base.toLowerCase() !== 'scratch') {
    throw refuse(
      df,
      final.from,
      `the final stage starts FROM ${final.base}, not FROM scratch`,
      'a bundle image carries only its own files: end the Dockerfile with FROM scratch and COPY run.sh and assets/',
    );
  }
  const stageByRef = (ref: string): Stage | undefined => (/^\d+$/.test(ref) ? df.stages[Number(ref)] : df.stages.find((s) => s.name === ref.toLowerCase()));

  const steps: CopyStep[] = [];
  for (const ins of final.instructions) {
    switch (ins.keyword) {
      case 'COPY':
      case 'ADD': {
        if (ins.heredocs.length) throw refuse(df, ins, `${ins.keyword} <<heredoc writes a file from inline text`, 'put the content in a file in the folder and COPY that file');
        const from = ins.flags.from;
        if (from !== undefined) {
          const stage = stageByRef(from);
          if (stage && stage.index < final.index) {
            throw refuse(
              df,
              ins,
              `copies files made by build stage "${stage.name ?? stage.index}" (line ${stage.from.line}), which ${describeStage(stage)}`,
              `kbundle builds without running build stages: ${HINT_URL}; anything else the stage does belongs in run.sh (it runs on the node)`,
            );
          }
          throw refuse(df, ins, `copies files out of the image "${from}"`, `kbundle builds without pulling images: ${HINT_URL}`);
        }
        for (const k of Object.keys(ins.flags)) {
          if (!['chmod', 'chown', 'link'].includes(k))
            throw refuse(df, ins, `the option --${k} is not supported`, 'kbundle translates COPY [--chmod=<octal>] [--chown=<uid>:<gid>] [--link] <src>… <dest>');
        }
        if (ins.args.length < 2) throw refuse(df, ins, `${ins.keyword} needs at least one source and a destination`, `${ins.keyword} <src>… <dest>`);
        const given = ins.args.slice(0, -1);
        const destArg = ins.args.at(-1)!;
        if (ins.keyword === 'ADD') {
          const url = given.find((g) => /^(https?|git|ssh):\/\/|^git@/.test(g));
          if (url) throw refuse(df, ins, `ADD downloads ${url} at build time`, HINT_URL);
          const archive = given.find((g) => ARCHIVE_NAME.test(g));
          if (archive)
            throw refuse(
              df,
              ins,
              `ADD unpacks the local archive ${archive}`,
              'unpack it into the folder and COPY the result, or pin the upstream archive with `url:` + `sha256:` + `extract:` in bundle.yaml',
            );
        }
        if (destArg.includes('$')) throw refuse(df, ins, `the destination "${destArg}" uses a variable`, 'write the destination literally');
        const sources: CopySource[] = [];
        for (const g of given) sources.push(...resolveSources(folder, df, ins, g));
        // No WORKDIR is allowed, so relative destinations are relative to "/".
        const dest = posix.normalize(posix.join('/', destArg));
        const chmod = ins.flags.chmod !== undefined ? parseChmod(df, ins, ins.flags.chmod) : undefined;
        const owner = ins.flags.chown !== undefined ? parseChown(df, ins, ins.flags.chown) : { uid: 0, gid: 0 };
        steps.push({
          line: ins.line,
          text: ins.text,
          sources,
          dest: dest === '/.' ? '/' : dest,
          destIsDir: /\/\.?$/.test(destArg) || destArg === '.' || given.length > 1 || sources.length > 1,
          chmod,
          ...owner,
        });
        break;
      }
      case 'RUN':
        throw refuse(
          df,
          ins,
          'RUN in the final stage needs a container runtime at build time',
          `kbundle builds without running anything: do this work in run.sh (it runs on the node), or ${HINT_URL}`,
        );
      case 'WORKDIR':
        throw refuse(df, ins, 'WORKDIR is not supported', 'write absolute COPY destinations (COPY ./run.sh /)');
      default:
        throw refuse(
          df,
          ins,
          `${ins.keyword} in the final stage is not translated: only COPY is`,
          ['ENTRYPOINT', 'CMD', 'LABEL', 'ENV', 'ARG', 'EXPOSE', 'VOLUME', 'USER', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL', 'ONBUILD', 'MAINTAINER'].includes(ins.keyword)
            ? 'Kairos only uses the image files (it runs run.sh, or extracts the tree): remove it; bundle metadata goes in bundle.yaml (kbundle import writes one)'
            : 'remove it; only FROM scratch and COPY make a bundle image',
        );
    }
  }
  if (!steps.length) throw refuse(df, final.from, 'the final stage copies nothing', 'COPY run.sh and assets/ into it');
  return { dir, folder, dockerfile: df, steps };
}

/** lstat that reports a missing path as undefined. */
export async function lstatOrUndefined(p: string) {
  try {
    return await lstat(p);
  } catch {
    return undefined;
  }
}
