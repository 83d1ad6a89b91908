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
 * - each Pod runs spec.image as its container, as the kubelet would: the image is pulled by digest
 *   (skopeo copy, this machine's architecture) and unpacked (umoci); the Pod is a private mount
 *   namespace (`unshare -m`) chrooted into that image root alone (read-only, nothing of this
 *   machine in it), with tmpfs /tmp and /dev, /proc, and the node root bind-mounted at
 *   hostMountPath; its environment is the image's `Env` plus HOST_DIR. `$(VAR)` in commands is
 *   expanded as Kubernetes does, from the container env.
 *
 * Commands come from the object given (the YAML kbundle emitted), never from a copy.
 * Simplified: a failing preflight is Failed at once (the real Pod restarts OnFailure until its
 * activeDeadlineSeconds, then fails); drain evicts nothing (the simulated nodes run no Pods);
 * target nodes are read once per run (the controller re-reads them on every reconcile, which the
 * tests model by running an object again after changing labels).
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
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

/** A pulled and unpacked image: what a Pod's container runs from. */
export interface Container {
  image: string;
  rootfs: string;
  /** The image config's Env (umoci writes it into the runtime spec). */
  env: string[];
}

const ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64' };

export class OperatorStandin {
  private pulled = new Map<string, Promise<Container | string>>();

  constructor(private readonly registryHost: string) {}

  /** Pull `image` as the kubelet would: by digest, from the registry, for this machine; an error text when it cannot. */
  pull(image: string): Promise<Container | string> {
    if (!/@sha256:[0-9a-f]{64}$/.test(image)) return Promise.resolve(`image ${image} is not pinned to a digest`);
    if (!image.startsWith(`${this.registryHost}/`)) return Promise.resolve(`image ${image} is not in the test registry`);
    let got = this.pulled.get(image);
    if (!got) {
      got = (async () => {
        const dir = tempDir('kbundle-pulled-');
        const copy = await runProcess('skopeo', [
          'copy',
          '--quiet',
          '--src-tls-verify=false',
          '--override-os',
          'linux',
          '--override-arch',
          ARCH[process.arch]!,
          `docker://${image}`,
          `oci:${dir}/layout:image`,
        ]);
        if (copy.code !== 0) return `ErrImagePull: ${image}: ${copy.stderr.trim()}`;
        const unpack = await runProcess('umoci', ['unpack', '--image', `${dir}/layout:image`, `${dir}/bundle`]);
        if (unpack.code !== 0) return `CreateContainerError: ${image}: ${unpack.stderr.trim()}`;
        const spec = JSON.parse(readFileSync(`${dir}/bundle/config.json`, 'utf8')) as { process: { env?: string[] } };
        return { image, rootfs: `${dir}/bundle/rootfs`, env: spec.process.env ?? [] };
      })();
      this.pulled.set(image, got);
    }
    return got;
  }

  /**
   * One container run: `argv` (already expanded) inside the image root, the node root at
   * hostMount. The root is read-only and holds nothing but the image; the runtime makes the mount
   * points (/dev, /proc, /tmp, hostMount) in it, as runc does.
   */
  async runPod(container: Container, node: SimNode, hostMount: string, argv: string[], opts: { readOnly: boolean; terminationLog?: string }): Promise<PodRun> {
    const R = container.rootfs;
    const log = opts.terminationLog ?? join(tempDir(), 'termination-log');
    if (!existsSync(log)) writeFileSync(log, '');
    const env = [...container.env.filter((e) => !e.startsWith('HOST_DIR=')), `HOST_DIR=${hostMount}`];
    const script = [
      'set -e',
      `R=${q(R)}`,
      `mkdir -p "$R/dev" "$R/proc" "$R/tmp" "$R"${q(hostMount)}`,
      // A container's root is a mount point (the runtime pivots into it): so is this one.
      'mount --bind "$R" "$R"',
      'mount -t tmpfs tmpfs "$R/dev"',
      'for d in null zero random urandom full tty; do touch "$R/dev/$d"; mount --bind /dev/$d "$R/dev/$d"; done',
      'touch "$R/dev/termination-log"',
      `mount --bind ${q(log)} "$R/dev/termination-log"`,
      'mount --rbind /proc "$R/proc"',
      'mount -t tmpfs tmpfs "$R/tmp"',
      `mount --bind ${q(node.root)} "$R"${q(hostMount)}`,
      ...(opts.readOnly ? [`mount -o remount,bind,ro "$R"${q(hostMount)}`] : []),
      'mount -o remount,bind,ro "$R"',
      // The environment is the container's alone; chroot (this machine's) starts argv[0] found on
      // the image's PATH inside the image root.
      `exec /usr/bin/env -i ${env.map(q).join(' ')} /usr/sbin/chroot "$R" "$@"`,
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
      const container = await this.pull(spec.image);
      if (spec.preflight) {
        const pfImage = spec.preflight.image ?? spec.image;
        const pf = await this.pull(pfImage);
        if (typeof pf === 'string') return { phase: 'Failed', message: `Preflight failed: ${pf}`, skipped: false, attempts: [] };
        const terminationLog = join(tempDir(), 'termination-log');
        writeFileSync(terminationLog, '');
        const r = await this.runPod(
          pf,
          node,
          hostMount,
          spec.preflight.command.map((a: string) => expand(a, env)),
          { readOnly: true, terminationLog },
        );
        const msg = readFileSync(terminationLog, 'utf8');
        const preflight = { ...r, terminationLog: msg };
        if (r.code !== 0) return { phase: 'Failed', message: `Preflight failed: exit ${r.code}`, skipped: false, preflight, attempts: [] };
        if (msg !== '') return { phase: 'Completed', message: `Skipped by preflight: ${msg}`, skipped: true, preflight, attempts: [] };
        return this.job(node, spec, hostMount, env, backoffLimit, container, preflight);
      }
      return this.job(node, spec, hostMount, env, backoffLimit, container);
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

  private async job(
    node: SimNode,
    spec: any,
    hostMount: string,
    env: Record<string, string>,
    backoffLimit: number,
    container: Container | string,
    preflight?: NodeOutcome['preflight'],
  ): Promise<NodeOutcome> {
    if (spec.cordon) node.cordoned = true; // (drain: the simulated nodes run no pods to evict)
    const attempts: PodRun[] = [];
    if (typeof container === 'string') return { phase: 'Failed', message: container, skipped: false, preflight, attempts };
    for (let i = 0; i <= backoffLimit; i++) {
      const r = await this.runPod(
        container,
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
