/**
 * A stand-in for the Kairos operator (kairos-io/kairos-operator v0.1.3,
 * internal/controller/nodeop_controller.go and cmd/node-labeler/labeler.go) that runs what the
 * real one would, on simulated nodes whose root file systems are folders:
 *
 * - labels: computed from each node root's /etc/kairos-release the labeler's way, plus the
 *   kubelet's kubernetes.io/hostname and whatever the test adds (kubectl label);
 * - targets: spec.nodeSelector matched with metav1.LabelSelector semantics, masters first;
 * - per node, up to spec.concurrency at a time (0 = all), no new node after a failure when
 *   spec.stopOnFailure: "pull" spec.image (it must resolve in the registry, checked with skopeo),
 *   run spec.preflight.command with the root mounted read-only at hostMountPath and
 *   /dev/termination-log captured (non-empty: skipped, Completed; non-zero exit: Failed), then the
 *   Job: spec.command with the root read-write, HOST_DIR set, retried up to spec.backoffLimit
 *   (default 6) times; cordon before and uncordon after (uncordonOnFailure), reboot on success.
 * - each Pod is a private mount namespace (`unshare -m`) chrooted into a container root that has
 *   this machine's /usr (read-only), a /usr/local/bin/kbundle that starts the built CLI (the
 *   kbundle image's entrypoint path), tmpfs /tmp and /dev, and the node root bind-mounted at
 *   hostMountPath. `$(VAR)` in commands is expanded as Kubernetes does, from the container env.
 *
 * Commands come from the object given (the YAML kbundle emitted), never from a copy.
 * Simplified: a failing preflight is Failed at once (the real Pod restarts OnFailure until its
 * activeDeadlineSeconds, then fails); drain evicts nothing (the simulated nodes run no Pods);
 * target nodes are read once per run (the controller re-reads them on every reconcile, which the
 * tests model by running an object again after changing labels).
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { cliCommand, REPO_ROOT } from './cli.js';
import { tempDir } from './exec.js';

export interface SimNode {
  name: string;
  root: string;
  /** Extra labels (what `kubectl label node` added), on top of the labeler's and the kubelet's. */
  extraLabels?: Record<string, string>;
  /** The node's /proc/cmdline (for kairos.io/boot-state). */
  cmdline?: string;
  controlPlane?: boolean;
  /** Set by the stand-in. */
  cordoned?: boolean;
  rebooted?: number;
}

export interface PodRun {
  code: number;
  stdout: string;
  stderr: string;
}

export interface NodeOutcome {
  phase: 'Completed' | 'Failed';
  message: string;
  skipped: boolean;
  preflight?: PodRun & { terminationLog: string };
  attempts: PodRun[];
}

export interface RunResult {
  phase: 'Completed' | 'Failed' | 'Running';
  /** Node names in the order work started on them. */
  started: string[];
  statuses: Record<string, NodeOutcome>;
  /** Most nodes that ran at the same time. */
  maxParallel: number;
}

// ---- the labeler ----------------------------------------------------------------------------

const LABEL_FIELDS: Record<string, string> = {
  ID: 'kairos.io/id',
  FAMILY: 'kairos.io/family',
  FLAVOR: 'kairos.io/flavor',
  FLAVOR_RELEASE: 'kairos.io/flavor-release',
  VARIANT: 'kairos.io/variant',
  RELEASE: 'kairos.io/release',
  MODEL: 'kairos.io/model',
  ARCH: 'kairos.io/arch',
  TRUSTED_BOOT: 'kairos.io/trusted-boot',
  FIPS: 'kairos.io/fips',
  SOFTWARE_VERSION_PREFIX: 'kairos.io/software-version-prefix',
  SOFTWARE_VERSION: 'kairos.io/software-version',
};

function envFile(path: string): Record<string, string> | undefined {
  if (!existsSync(path)) return undefined;
  const out: Record<string, string> = {};
  for (const raw of readFileSync(path, 'utf8').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || !line.includes('=')) continue;
    const i = line.indexOf('=');
    out[line.slice(0, i)] = line.slice(i + 1).replace(/^["']+|["']+$/g, '');
  }
  return out;
}

function sanitize(s: string): string {
  let v = s.replace(/[^a-zA-Z0-9\-_.]/g, '-').replace(/^[-_.]+|[-_.]+$/g, '');
  if (v.length > 63) v = v.slice(0, 63).replace(/^[-_.]+|[-_.]+$/g, '');
  return v;
}

function bootState(cmdline: string | undefined): string | undefined {
  if (cmdline === undefined) return undefined;
  if (cmdline.includes('COS_ACTIVE')) return 'active';
  if (cmdline.includes('COS_PASSIVE')) return 'passive';
  if (/COS_RECOVERY|COS_SYSTEM|recovery-mode/.test(cmdline)) return 'recovery';
  if (/live:LABEL|live:CDLABEL|netboot/.test(cmdline)) return 'livecd';
  return 'unknown';
}

/** The node's labels: kubelet's hostname (and role), the operator labeler's, then the test's. */
export function nodeLabels(n: SimNode): Record<string, string> {
  const labels: Record<string, string> = { 'kubernetes.io/hostname': n.name, 'kubernetes.io/os': 'linux' };
  if (n.controlPlane) labels['node-role.kubernetes.io/control-plane'] = '';
  const release = envFile(join(n.root, 'etc/kairos-release'));
  const kairos = release !== undefined || (envFile(join(n.root, 'etc/os-release'))?.ID ?? '').toLowerCase().includes('kairos');
  if (kairos) {
    labels['kairos.io/managed'] = 'true';
    for (const [k, label] of Object.entries(LABEL_FIELDS)) if (release?.[`KAIROS_${k}`]) labels[label] = sanitize(release[`KAIROS_${k}`]!);
    const bs = bootState(n.cmdline);
    if (bs) labels['kairos.io/boot-state'] = bs;
  }
  return { ...labels, ...n.extraLabels };
}

// ---- selectors (metav1.LabelSelectorAsSelector) ----------------------------------------------

interface Selector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

export function matches(sel: Selector | undefined, labels: Record<string, string>): boolean {
  if (!sel) return true;
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const r of sel.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    switch (r.operator) {
      case 'In':
        if (!has || !r.values!.includes(labels[r.key]!)) return false;
        break;
      case 'NotIn':
        if (has && r.values!.includes(labels[r.key]!)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        throw new Error(`operator ${r.operator}: LabelSelectorAsSelector fails, the operator selects nothing`);
    }
  }
  return true;
}

// ---- Kubernetes command expansion -----------------------------------------------------------

/** `$(VAR)` → value when VAR is in env, `$$` → `$`, anything else kept (k8s.io/kubernetes third_party/forked/golang/expansion). */
export function expand(arg: string, env: Record<string, string>): string {
  let out = '';
  for (let i = 0; i < arg.length; i++) {
    const c = arg[i]!;
    if (c !== '$' || i + 1 >= arg.length) {
      out += c;
      continue;
    }
    const next = arg[i + 1]!;
    if (next === '$') {
      out += '$';
      i++;
    } else if (next === '(') {
      const close = arg.indexOf(')', i + 2);
      if (close < 0) {
        out += arg.slice(i);
        break;
      }
      const name = arg.slice(i + 2, close);
      out += name in env ? env[name] : `$(${name})`;
      i = close;
    } else out += c;
  }
  return out;
}

// ---- pods -----------------------------------------------------------------------------------

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export class OperatorStandin {
  private readonly rootfs: string;
  private readonly bin: string;
  private pulled = new Map<string, boolean>();

  constructor(private readonly registryHost: string) {
    // The container root: mount points only; everything is bind-mounted per Pod.
    this.rootfs = tempDir('kbundle-container-');
    for (const d of ['usr', 'etc', 'dev', 'proc', 'tmp', REPO_ROOT.slice(1)]) mkdirSync(join(this.rootfs, d), { recursive: true });
    for (const l of ['bin', 'lib', 'lib64', 'sbin']) if (existsSync(`/usr/${l}`)) symlinkSync(`usr/${l}`, join(this.rootfs, l));
    this.bin = tempDir('kbundle-image-bin-');
    const { file, args } = cliCommand();
    writeFileSync(join(this.bin, 'kbundle'), `#!/bin/sh\nexec ${[file, ...args].map(q).join(' ')} "$@"\n`);
    chmodSync(join(this.bin, 'kbundle'), 0o755);
  }

  /** Is `image` pullable (digest-pinned and present in the loopback registry)? */
  private async pull(image: string): Promise<string | undefined> {
    if (!/@sha256:[0-9a-f]{64}$/.test(image)) return `image ${image} is not pinned to a digest`;
    if (!image.startsWith(`${this.registryHost}/`)) return `image ${image} is not in the test registry`;
    if (!this.pulled.has(image)) {
      const r = await runProcess('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${image}`]);
      this.pulled.set(image, r.code === 0);
    }
    return this.pulled.get(image) ? undefined : `ErrImagePull: ${image}`;
  }

  /** One container run: `argv` (already expanded) inside the container root, the node root at hostMount. */
  async runPod(node: SimNode, hostMount: string, argv: string[], opts: { readOnly: boolean; terminationLog?: string }): Promise<PodRun> {
    const R = this.rootfs;
    const log = opts.terminationLog ?? join(tempDir(), 'termination-log');
    if (!existsSync(log)) writeFileSync(log, '');
    const script = [
      'set -e',
      `R=${q(R)}`,
      // A container's root is a mount point (the runtime pivots into it): so is this one.
      'mount --bind "$R" "$R"',
      'mount --rbind /usr "$R/usr"',
      'mount -o remount,bind,ro "$R/usr"',
      `mount --bind ${q(this.bin)} "$R/usr/local/bin"`,
      'mount -t tmpfs tmpfs "$R/dev"',
      'for d in null zero random urandom full; do touch "$R/dev/$d"; mount --bind /dev/$d "$R/dev/$d"; done',
      'touch "$R/dev/termination-log"',
      `mount --bind ${q(log)} "$R/dev/termination-log"`,
      'mount --rbind /proc "$R/proc"',
      'mount -t tmpfs tmpfs "$R/tmp"',
      // Again after the tmpfs: a checkout under /tmp (CI clones) has its mount point hidden by it.
      `mkdir -p "$R"${q(REPO_ROOT)}`,
      `mount --bind ${q(REPO_ROOT)} "$R"${q(REPO_ROOT)}`,
      `mount -o remount,bind,ro "$R"${q(REPO_ROOT)}`,
      `mkdir -p "$R"${q(hostMount)}`,
      `mount --bind ${q(node.root)} "$R"${q(hostMount)}`,
      ...(opts.readOnly ? [`mount -o remount,bind,ro "$R"${q(hostMount)}`] : []),
      `exec chroot "$R" /usr/bin/env -i HOST_DIR=${q(hostMount)} PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp "$@"`,
    ].join('\n');
    return runProcess('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'pod', ...argv]);
  }

  /** Run a NodeOp (the parsed object) over `nodes` to the end, as the controller would. */
  async runNodeOp(obj: any, nodes: SimNode[]): Promise<RunResult> {
    if (obj.apiVersion !== 'operator.kairos.io/v1alpha1' || obj.kind !== 'NodeOp') throw new Error(`not a NodeOp: ${obj.apiVersion} ${obj.kind}`);
    const spec = obj.spec;
    const hostMount: string = spec.hostMountPath ?? '/host';
    const env = { HOST_DIR: hostMount };
    const targets = nodes.filter((n) => matches(spec.nodeSelector, nodeLabels(n)));
    // The API server lists nodes by name; the controller moves control-plane nodes first (stable).
    targets.sort((a, b) => a.name.localeCompare(b.name));
    targets.sort((a, b) => Number(!!b.controlPlane) - Number(!!a.controlPlane));
    const statuses: Record<string, NodeOutcome> = {};
    const started: string[] = [];
    const limit = !spec.concurrency ? targets.length : spec.concurrency;
    const backoffLimit: number = spec.backoffLimit ?? 6;
    let running = 0;
    let maxParallel = 0;

    const work = async (node: SimNode): Promise<NodeOutcome> => {
      const pullError = await this.pull(spec.image);
      if (spec.preflight) {
        const pfImage = spec.preflight.image ?? spec.image;
        const pfPull = await this.pull(pfImage);
        if (pfPull) return { phase: 'Failed', message: `Preflight failed: ${pfPull}`, skipped: false, attempts: [] };
        const terminationLog = join(tempDir(), 'termination-log');
        writeFileSync(terminationLog, '');
        const r = await this.runPod(
          node,
          hostMount,
          spec.preflight.command.map((a: string) => expand(a, env)),
          { readOnly: true, terminationLog },
        );
        const msg = readFileSync(terminationLog, 'utf8');
        const preflight = { ...r, terminationLog: msg };
        if (r.code !== 0) return { phase: 'Failed', message: `Preflight failed: exit ${r.code}`, skipped: false, preflight, attempts: [] };
        if (msg !== '') return { phase: 'Completed', message: `Skipped by preflight: ${msg}`, skipped: true, preflight, attempts: [] };
        return this.job(node, spec, hostMount, env, backoffLimit, pullError, preflight);
      }
      return this.job(node, spec, hostMount, env, backoffLimit, pullError);
    };

    const inflight = new Set<Promise<void>>();
    const fresh = [...targets];
    const failed = () => Object.values(statuses).some((s) => s.phase === 'Failed');
    for (;;) {
      while (fresh.length && running < limit && !(spec.stopOnFailure && failed())) {
        const node = fresh.shift()!;
        started.push(node.name);
        running++;
        maxParallel = Math.max(maxParallel, running);
        const p: Promise<void> = work(node).then((s) => {
          statuses[node.name] = s;
          running--;
          inflight.delete(p);
        });
        inflight.add(p);
      }
      if (inflight.size === 0) break;
      await Promise.race(inflight);
    }
    const all = Object.values(statuses);
    const phase = all.some((s) => s.phase === 'Failed') ? 'Failed' : all.length > 0 && all.length === targets.length ? 'Completed' : 'Running';
    return { phase, started, statuses, maxParallel };
  }

  private async job(node: SimNode, spec: any, hostMount: string, env: Record<string, string>, backoffLimit: number, pullError?: string, preflight?: NodeOutcome['preflight']): Promise<NodeOutcome> {
    if (spec.cordon) node.cordoned = true; // (drain: the simulated nodes run no pods to evict)
    const attempts: PodRun[] = [];
    if (pullError) return { phase: 'Failed', message: pullError, skipped: false, preflight, attempts };
    for (let i = 0; i <= backoffLimit; i++) {
      const r = await this.runPod(
        node,
        hostMount,
        spec.command.map((a: string) => expand(a, env)),
        { readOnly: false },
      );
      attempts.push(r);
      if (r.code === 0) {
        if (spec.rebootOnSuccess) node.rebooted = (node.rebooted ?? 0) + 1;
        if (spec.cordon) node.cordoned = false;
        return { phase: 'Completed', message: 'Job completed', skipped: false, preflight, attempts };
      }
    }
    if (spec.cordon && spec.uncordonOnFailure) node.cordoned = false;
    return { phase: 'Failed', message: `Job failed after ${attempts.length} attempt(s)`, skipped: false, preflight, attempts };
  }
}

export function runProcess(cmd: string, args: string[]): Promise<PodRun> {
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', rej);
    p.on('close', (code, signal) => res({ code: code ?? (signal ? 128 : -1), stdout, stderr }));
  });
}

/** The objects of a YAML stream (what `kubectl apply -f` would read). */
export function objectsOf(yamlText: string): any[] {
  return parseAllDocuments(yamlText)
    .map((d) => {
      if (d.errors.length) throw new Error(`YAML: ${d.errors[0]!.message}`);
      return d.toJS();
    })
    .filter((o) => o !== null && o !== undefined);
}
