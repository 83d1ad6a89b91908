/**
 * Hardening, bundle scripts (issue 16, classes 3 and 7): run.sh under --root is confined to the
 * root, finds a kairos-agent that answers from the given cloud-config, is stopped after its time
 * limit, cannot hold kbundle through a background child, and leaves no temp folder behind.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildTo } from '../../src/builder/output.js';
import { EXIT_CODES } from '../../src/cli/exit-codes.js';
import { kbundle } from '../helpers/cli.js';
import { cleanupTempDirs, run, tempDir } from '../helpers/exec.js';
import { writeBundle } from '../helpers/fixture-bundle.js';

afterAll(() => cleanupTempDirs());

const SPEC = 'name: probe\nversion: 1.0.0\ndescription: probe\ntype: run\nplatforms: [linux/amd64, linux/arm64]\nrun: run.sh\n';

/** A run bundle with `script` as run.sh, built into a local OCI layout (installed with --local-file). */
async function runBundle(script: string): Promise<string> {
  const dir = writeBundle(join(tempDir(), 'b'), SPEC, [{ path: 'run.sh', content: `#!/bin/sh\n${script}` }]);
  const layout = join(tempDir(), 'oci');
  await buildTo(dir, { transport: 'oci', path: layout, ref: 'probe' });
  return `run://${layout}:probe`;
}

/** Environment with a private TMPDIR, so staging folders left behind can be counted. */
function privateTmp(): { env: NodeJS.ProcessEnv; tmp: string } {
  const tmp = tempDir();
  return { tmp, env: { ...process.env, TMPDIR: tmp } };
}

describe('run.sh under --root is confined to the root', () => {
  it('writes to absolute paths land in the root, the host is untouched and nothing is left in TMPDIR', async () => {
    const host = tempDir();
    const target = await runBundle(
      `set -e\nmkdir -p /var/lib/probe && echo inside > /var/lib/probe/out\necho escaped > ${host}/escaped 2>/dev/null || echo "host path not reachable" > /var/lib/probe/host\n` +
        `[ -e /work ] && echo visible > /var/lib/probe/work || true\n`,
    );
    const root = tempDir();
    const { env, tmp } = privateTmp();
    const r = kbundle(['install', target, '--local-file', '--root', root], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(root, 'var/lib/probe/out'), 'utf8')).toBe('inside\n');
    expect(readFileSync(join(root, 'var/lib/probe/host'), 'utf8')).toBe('host path not reachable\n');
    expect(existsSync(join(host, 'escaped'))).toBe(false);
    expect(existsSync(join(root, 'var/lib/probe/work'))).toBe(false); // the host's folders are not in the jail
    expect(readdirSync(tmp)).toEqual([]);
  });

  it('a symlink planted in the root cannot redirect the script to the host', async () => {
    const host = tempDir();
    const target = await runBundle('mkdir -p /var/evil/x && echo planted > /var/evil/x/f\n');
    const root = tempDir();
    mkdirSync(join(root, 'var'));
    run('ln', ['-s', host, join(root, 'var/evil')]);
    const r = kbundle(['install', target, '--local-file', '--root', root]);
    // The absolute link resolves inside the jail (where it leads nowhere useful), never on the host.
    expect(readdirSync(host)).toEqual([]);
    expect(r.code === 0 || r.stderr.includes('run.sh exited')).toBe(true);
  });

  it('kairos-agent config get answers from the --config cloud-config as the node agent prints it', async () => {
    const script =
      'set -e\nmkdir -p /etc/probe\nfor q in probe.version probe.replicas probe.flag probe.missing \'"k3s-agent".enabled\' probe.list; do kairos-agent config get "$q" >> /etc/probe/answers; echo --- >> /etc/probe/answers; done\n' +
      'kairos-agent config get probe.bad-key 2> /etc/probe/err || echo "status $?" >> /etc/probe/err\n';
    const layout = join(tempDir(), 'oci');
    const dir = writeBundle(join(tempDir(), 'b'), SPEC, [{ path: 'run.sh', content: `#!/bin/sh\n${script}` }]);
    await buildTo(dir, { transport: 'oci', path: layout, ref: 'probe' });
    const root = tempDir();
    mkdirSync(join(root, 'oem'));
    // A node config file and the --config file are merged; --config is read last.
    writeFileSync(join(root, 'oem/10_node.yaml'), '#cloud-config\nprobe:\n  version: "0.1"\n  list: [a]\nk3s-agent:\n  enabled: true\n');
    const cc = join(tempDir(), 'cc.yaml');
    writeFileSync(cc, `#cloud-config\nbundles:\n  - targets: ["run://${layout}:probe"]\n    local_file: true\nprobe:\n  version: "1.0"\n  replicas: 1000000\n  flag: "yes"\n  list: [b]\n`);
    const r = kbundle(['install', '--config', cc, '--root', root]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const answers = readFileSync(join(root, 'etc/probe/answers'), 'utf8').split('---\n');
    expect(answers.slice(0, 6)).toEqual(['"1.0"\n', '1e+06\n', '"yes"\n', 'null\n', 'true\n', '- a\n- b\n']);
    expect(readFileSync(join(root, 'etc/probe/err'), 'utf8')).toBe('Error: function not defined: key/0\nstatus 1\n');
  });
});

describe('run.sh is contained', () => {
  it('is stopped after --script-timeout with exit code TIMEOUT, confined or not', async () => {
    const target = await runBundle('echo started\nsleep 300\n');
    for (const extra of [[], ['--unconfined-scripts']]) {
      const started = Date.now();
      const { env, tmp } = privateTmp();
      const r = kbundle(['install', target, '--local-file', '--root', tempDir(), '--script-timeout', '1', ...extra], { env });
      expect(r.code, r.stderr).toBe(EXIT_CODES.TIMEOUT);
      expect(r.stderr).toMatch(/run\.sh did not finish within 1 s and was stopped:\nstarted/);
      expect(Date.now() - started).toBeLessThan(30_000);
      expect(readdirSync(tmp)).toEqual([]);
    }
  });

  it('a background child holding stdout open does not hold kbundle, and is stopped', async () => {
    const marker = `kbundle-probe-${process.pid}-${Date.now()}`;
    // The child keeps the output pipe open and would live for 5 minutes.
    const target = await runBundle(`sh -c 'exec -a ${marker} sleep 300' &\necho "left a child"\n`);
    for (const extra of [[], ['--unconfined-scripts']]) {
      const started = Date.now();
      const r = kbundle(['install', target, '--local-file', '--root', tempDir(), ...extra]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain('left a child');
      expect(Date.now() - started).toBeLessThan(30_000);
      expect(run('pgrep', ['-f', marker]).stdout.trim()).toBe('');
    }
  });

  it('stdin is closed: a script reading it gets end of file at once', async () => {
    const target = await runBundle('if read line; then echo "read: $line"; else echo "stdin closed"; fi\n');
    const r = kbundle(['install', target, '--local-file', '--root', tempDir()], { input: 'should not be seen\n' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('stdin closed');
  });

  it('a staging folder left by a killed kbundle is removed by the next run', async () => {
    const { env, tmp } = privateTmp();
    // pid 2^22+1 is above Linux's pid_max limit, so no live process has it.
    const stale = join(tmp, `.kbundle-run-${2 ** 22 + 1}-AbCdEf`);
    mkdirSync(join(stale, 'bundle'), { recursive: true });
    writeFileSync(join(stale, 'bundle', 'run.sh'), 'leftover');
    utimesSync(stale, new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));
    const target = await runBundle('echo ok\n');
    const r = kbundle(['install', target, '--local-file', '--root', tempDir()], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(tmp)).toEqual([]);
  });
});
