/**
 * All-or-nothing installs onto a live root. Entries are written to temp names beside their final
 * paths (same folder, so same file system) and only renamed into place once the whole image has
 * been written; a folder the root does not have is made under a temp name with everything below
 * it at its own names, and renamed into place the same way (one `stage` record for all of it).
 * Every step that changes the root is first appended to a journal in
 * `<root>/var/lib/kbundle/journal/`, so whatever stops kbundle — SIGKILL, a full disk, a power
 * cut after the journal reached the disk — the next kbundle run on that root finishes the job
 * (the journal has its commit record: roll forward) or undoes it (no commit record: roll back).
 * A reader of the root sees the old tree or the new one, never a mix of the two images' files.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, lstatSync, openSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, chmodSync, unlinkSync, writeSync } from 'node:fs';
import { join, posix } from 'node:path';
import { writeError } from '../errors.js';
import { stateDir } from '../util/state-dir.js';

type JournalRecord =
  | { t: 'begin'; pid: number; what: string }
  /**
   * A folder created for the image (removed on roll back when empty). Written by earlier kbundle
   * versions (new folders are now staged whole, see apply.ts folderAt); read for their journals.
   */
  | { t: 'mkdir'; p: string }
  /**
   * Temps named `prefix` + a counter may be created in folder `p` from now on (written before the
   * first one is): a roll back removes them all, whether or not their `stage` records made it.
   */
  | { t: 'tmpdir'; p: string; prefix: string }
  /** A temp that goes to `final` at commit (buffered: all of them are on disk before the commit record). */
  | { t: 'stage'; tmp: string; final: string }
  /** Something that was at `from` was moved to `to` to make room (restored on roll back). */
  | { t: 'moved'; from: string; to: string }
  /** A folder that existed gets this mode at commit. */
  | { t: 'chmod'; p: string; mode: number }
  | { t: 'commit' };

function lstatOrUndefined(p: string) {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}

/** Name for moving `path` aside (same folder: a rename, never a copy). */
export function asideName(path: string): string {
  return `${path}.kbundle-old-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/**
 * The name of every temp this process stages starts with this (unique per run: the pid and random
 * bytes); a counter after it is enough (random bytes per file cost measurably).
 */
export const TMP_PREFIX = `.kbundle-tmp-${process.pid}-${randomBytes(4).toString('hex')}-`;
const TMP_PREFIX_SHAPE = /^\.kbundle-tmp-\d+-[0-9a-f]+-$/;

/** Buffered records are written once this many bytes are waiting (or before any unbuffered record). */
const BUFFER_BYTES = 64 * 1024;

/**
 * Fault injection for the crash tests (test/hardening/installs.test.ts): `N[:SIGNAL]` sends the
 * signal (default SIGKILL) to this process right after the N-th journal record is written.
 */
const SIGNAL_AT = /^(\d+)(?::(SIG[A-Z]+))?$/.exec(process.env.KBUNDLE_TEST_SIGNAL_AT ?? '');

/** Append `text` to the journal `file` open as `fd`; a failure names the journal (a write through an fd carries no path). */
function writeRecords(fd: number, file: string, text: string): void {
  try {
    for (let off = 0, b = Buffer.from(text); off < b.length;) off += writeSync(fd, b, off);
  } catch (e) {
    throw writeError(e, file);
  }
}

export class InstallJournal {
  private readonly records: JournalRecord[] = [];
  /** Records kept in `records` but not yet written (stage and chmod: only a commit needs them). */
  private pending = '';
  private written = 0;
  private readonly tmpDirs = new Set<string>();
  private committed = false;
  private finished = false;

  private constructor(
    readonly file: string,
    private readonly fd: number,
  ) {}

  /** Open a new journal for an install onto `root` (whose state folder is checked first). */
  static begin(root: string, what: string): InstallJournal {
    const dir = stateDir(root, 'journal');
    const file = join(dir, `${process.pid}-${randomBytes(6).toString('hex')}.journal`);
    const fd = openSync(file, 'wx', 0o600);
    const j = new InstallJournal(file, fd);
    j.append({ t: 'begin', pid: process.pid, what });
    return j;
  }

  /** Write `r` (and everything buffered before it) now: the step it announces may follow at once. */
  private append(r: JournalRecord): void {
    this.buffer(r);
    this.flush();
  }

  /** Keep `r` for the next write: for records a crash before the commit does not need. */
  private buffer(r: JournalRecord): void {
    this.records.push(r);
    this.pending += `${JSON.stringify(r)}\n`;
    if (this.pending.length >= BUFFER_BYTES) this.flush();
  }

  private flush(): void {
    if (!this.pending) return;
    writeRecords(this.fd, this.file, this.pending);
    this.pending = '';
    const before = this.written;
    this.written = this.records.length;
    if (SIGNAL_AT && before < Number(SIGNAL_AT[1]) && this.written >= Number(SIGNAL_AT[1])) process.kill(process.pid, (SIGNAL_AT[2] ?? 'SIGKILL') as NodeJS.Signals);
  }

  /**
   * Call before creating `tmp` (named TMP_PREFIX + anything, in its final folder). The first temp
   * of a folder writes a `tmpdir` record at once, so a crash right after leaves a journal from which
   * every temp is found; the `stage` record itself (tmp → final) is buffered until the commit.
   */
  stage(tmp: string, final: string): void {
    const slash = tmp.lastIndexOf('/');
    const dir = tmp.slice(0, slash);
    if (!tmp.startsWith(TMP_PREFIX, slash + 1)) throw new Error(`internal: temp ${tmp} is not named ${TMP_PREFIX}*`);
    if (!this.tmpDirs.has(dir)) {
      this.tmpDirs.add(dir);
      this.append({ t: 'tmpdir', p: dir, prefix: TMP_PREFIX });
    }
    this.buffer({ t: 'stage', tmp, final });
  }
  /** Call before moving `from` to `to`. */
  moved(from: string, to: string): void {
    this.append({ t: 'moved', from, to });
  }
  chmod(p: string, mode: number): void {
    this.buffer({ t: 'chmod', p, mode });
  }

  /** Make the install happen: record the commit durably, then rename everything into place. */
  commitSync(): void {
    if (this.finished) return;
    this.append({ t: 'commit' });
    try {
      fsyncSync(this.fd);
    } catch (e) {
      throw writeError(e, this.file);
    }
    this.committed = true;
    rollForward(this.records, (r) => this.append(r));
    this.close();
  }

  /**
   * Synchronous stops run before a roll back (also from a signal handler): whatever still creates
   * staged temps on another thread (file-writer.ts) must have stopped before they are removed.
   */
  readonly beforeAbort = new Set<() => void>();

  /** Undo everything (before commit), or finish it (once the commit record is written). */
  abortSync(): void {
    if (this.finished) return;
    for (const stop of this.beforeAbort) stop();
    if (this.committed) rollForward(this.records, (r) => this.append(r));
    else rollBack(this.records);
    this.close();
  }

  private close(): void {
    this.finished = true;
    closeSync(this.fd);
    unlinkSync(this.file);
  }
}

/** Rename every staged temp that is still there over its final path; drop what was moved aside. */
function rollForward(records: JournalRecord[], record: (r: JournalRecord) => void): void {
  for (const r of [...records]) {
    if (r.t === 'stage') putInPlace(r.tmp, r.final, record);
    else if (r.t === 'chmod') {
      try {
        chmodSync(r.p, r.mode);
      } catch {
        /* replaced by a later entry */
      }
    }
  }
  for (const r of records) if (r.t === 'moved') rmSync(r.to, { recursive: true, force: true });
}

/**
 * Rename `tmp` over `final` as containerd's Apply would put it there: replace, except that a folder
 * onto a folder merges. The usual case is one rename; the checks follow only when it fails, when
 * something is in the way that the install did not see: a folder in place of a file, or (a live
 * root) a folder or file that appeared at the final path of a folder the install staged whole.
 */
function putInPlace(tmp: string, final: string, record: (r: JournalRecord) => void): void {
  try {
    renameSync(tmp, final);
    return;
  } catch {
    /* looked at below */
  }
  const src = lstatOrUndefined(tmp);
  if (!src) return; // renamed before the crash
  const dst = lstatOrUndefined(final);
  if (src.isDirectory() && dst?.isDirectory()) {
    // Its entries go in one by one (the same rules below), then it is gone; its mode wins.
    for (const name of readdirSync(tmp)) putInPlace(join(tmp, name), join(final, name), record);
    chmodSync(final, src.mode & 0o7777);
    rmdirSync(tmp);
    return;
  }
  // rename(2) cannot put a file over a folder, nor a folder over a file: move it aside (dropped below).
  if (dst && dst.isDirectory() !== src.isDirectory()) {
    const aside = asideName(final);
    record({ t: 'moved', from: final, to: aside });
    renameSync(final, aside);
  }
  renameSync(tmp, final);
}

/** Remove every temp and created folder, newest first, and put back what was moved aside. */
function rollBack(records: JournalRecord[]): void {
  for (const r of [...records].reverse()) {
    try {
      if (r.t === 'stage') rmSync(r.tmp, { recursive: true, force: true });
      else if (r.t === 'tmpdir') {
        for (const name of readdirSync(r.p)) if (name.startsWith(r.prefix)) rmSync(posix.join(r.p, name), { recursive: true, force: true });
      } else if (r.t === 'mkdir') rmdirSync(r.p);
      else if (r.t === 'moved' && lstatOrUndefined(r.to)) {
        if (lstatOrUndefined(r.from)) rmSync(r.from, { recursive: true, force: true });
        renameSync(r.to, r.from);
      }
    } catch {
      /* a folder something else wrote into since: left in place */
    }
  }
}

function parseJournal(text: string): JournalRecord[] {
  const out: JournalRecord[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    try {
      out.push(JSON.parse(line) as JournalRecord);
    } catch {
      break; // the line a crash cut short: nothing after it happened
    }
  }
  return out;
}

/** Every path of a journal must lie inside the root it was found in. */
function insideRoot(records: JournalRecord[], root: string): boolean {
  const ok = (p: unknown) => typeof p === 'string' && (p === root || p.startsWith(`${root}/`)) && !p.split('/').includes('..');
  return records.every((r) =>
    r.t === 'stage'
      ? ok(r.tmp) && ok(r.final)
      : r.t === 'moved'
        ? ok(r.from) && ok(r.to)
        : r.t === 'tmpdir'
          ? ok(r.p) && typeof r.prefix === 'string' && TMP_PREFIX_SHAPE.test(r.prefix)
          : r.t === 'mkdir' || r.t === 'chmod'
            ? ok(r.p)
            : true,
  );
}

export interface Recovery {
  rolledBack: number;
  rolledForward: number;
}

/**
 * Finish or undo installs that were stopped part way (run with the root's lock held, so no
 * journal found belongs to a live install).
 */
export function recoverJournals(root: string): Recovery {
  const out: Recovery = { rolledBack: 0, rolledForward: 0 };
  const dir = stateDir(root, 'journal');
  for (const name of readdirSync(dir).sort()) {
    if (!name.endsWith('.journal')) continue;
    const file = join(dir, name);
    const records = parseJournal(readFileSync(file, 'utf8'));
    if (insideRoot(records, root)) {
      if (records.some((r) => r.t === 'commit')) {
        const fd = openSync(file, 'a');
        try {
          rollForward(records, (r) => {
            records.push(r);
            writeRecords(fd, file, `${JSON.stringify(r)}\n`);
          });
        } finally {
          closeSync(fd);
        }
        out.rolledForward++;
      } else {
        rollBack(records);
        out.rolledBack++;
      }
    }
    unlinkSync(file);
  }
  return out;
}
