/**
 * Where the files a trust policy names are: containers-policy.json's keyPath(s), fulcio.caPath
 * and rekorPublicKeyPath(s); the YAML policy's `key:` and trusted-root files. The one place both
 * formats turn such a path into a file to read.
 *
 * - A policy given on the command line (`--policy FILE`) belongs to the machine kbundle runs on:
 *   a relative path is relative to the policy file, an absolute one is taken as it is.
 * - The node's own policy (`<root>/usr/local/etc/kbundle/policy.json`, found under `--root`)
 *   describes that node, so its paths are node paths: `/etc/kbundle/release.pub` is
 *   `<root>/etc/kbundle/release.pub`, a relative path is relative to the policy's folder on the
 *   node, and both are resolved as if `root` were `/` (resolveInRoot: symlinks with absolute
 *   targets restart at the root, `..` stops at it). In a kbundle image Pod, `/` is the container
 *   and the node is at $HOST_DIR; a path can never reach the container or leave the node root.
 */
import { dirname, isAbsolute, posix, relative, resolve, sep } from 'node:path';
import { resolveInRoot } from '../extract/secure-path.js';

/** Turns a path written in a policy into the file to read on this machine. */
export interface PolicyPaths {
  resolve(path: string): string;
  /** For error messages: how paths of this policy are read. */
  describe: string;
}

/** Paths of a policy file of this machine: relative to the file, absolute as written. */
export function localPolicyPaths(policyPath: string): PolicyPaths {
  const base = dirname(resolve(policyPath));
  return { resolve: (p) => (isAbsolute(p) ? p : resolve(base, p)), describe: `relative to ${base}` };
}

/** Paths of a policy that lives at `policyPath` inside the node root `root`: node paths, confined to it. */
export function nodePolicyPaths(root: string, policyPath: string): PolicyPaths {
  const top = resolve(root);
  const rel = relative(top, resolve(policyPath));
  if (rel.startsWith('..') || isAbsolute(rel)) throw new Error(`${policyPath} is not under ${top}`);
  // The policy's folder as the node sees it, e.g. /usr/local/etc/kbundle.
  const nodeDir = posix.dirname(`/${rel.split(sep).join('/')}`);
  return {
    // Components unnormalised: `..` after a symlink is resolved where the symlink led, as the kernel does.
    resolve: (p) => resolveInRoot(top, [...(p.startsWith('/') ? [] : nodeDir.split('/')), ...p.split('/')], true),
    describe: `as paths of the node at ${top} (absolute paths start at it, relative ones at ${nodeDir})`,
  };
}
