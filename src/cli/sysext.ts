import { join } from 'node:path';
import type { Command } from 'commander';
import { sourceDateEpochFromEnv } from '../builder/epoch.js';
import { KbError, UserError } from '../errors.js';
import { pathExists } from '../fs-util.js';
import { capabilitiesOf, hasTransportPrefix, parseImageArgument } from '../store/transport.js';
import type { Node } from '../sysext/manage.js';
import { KAIROS_POLICY } from '../sysext/policy.js';
import { BOOT_STATES, hostSystemdArch, KINDS, systemdArch, type BootState, type ExtensionKind } from '../kairos/extensions.js';
import type { CliIo } from './io.js';
import { makePrinter } from './output.js';
import { verifierFromFlags } from '../policy/verifier.js';

// Heavy modules (registry client, OCI store, extraction) load only in the actions that need them,
// so `kbundle sysext build` starts fast.
const lazy = {
  build: () => import('../sysext/build.js'),
  check: () => import('../sysext/check.js'),
  manage: () => import('../sysext/manage.js'),
  pack: () => import('../builder/sysext-image.js'),
  open: () => import('../store/open.js'),
  spec: () => import('../builder/spec.js'),
  trust: () => import('../sysext/node-trust.js'),
  fromImage: () => import('../sysext/from-image.js'),
  hierarchies: () => import('../sysext/hierarchies.js'),
};

async function hierarchiesFlag(v: string | undefined, kind: ExtensionKind): Promise<string[] | undefined> {
  if (v === undefined) return undefined;
  const { parseHierarchies, hierarchyVariable } = await lazy.hierarchies();
  return parseHierarchies(v, `--hierarchies (${hierarchyVariable(kind)})`);
}

const HIERARCHIES_HELP =
  "the directories the node's systemd-sysext overlays, colon-separated as in SYSTEMD_SYSEXT_HIERARCHIES (default: with --root the node's systemd-sysext.service drop-in, else Kairos's /usr/local/bin:…:/usr/sbin list; confext /etc)";

/** An image argument, told apart from a folder here so that a folder build loads nothing more. */

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

const GOARCH: Record<string, string> = { 'x86-64': 'amd64', arm64: 'arm64', arm: 'arm', x86: '386', 'ppc64-le': 'ppc64le', s390x: 's390x', riscv64: 'riscv64', loongarch64: 'loong64' };

function parseVersion(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{3}$/.test(v)) throw new UserError(`--systemd-version: "${v}" must be a systemd version number such as 252 or 256`);
  return Number(v);
}

interface StateFlags {
  active?: boolean;
  passive?: boolean;
  recovery?: boolean;
  common?: boolean;
}

function stateOptions(cmd: Command): Command {
  return cmd.option('--active', 'the active boot entry').option('--passive', 'the passive boot entry').option('--recovery', 'the recovery boot entry').option('--common', 'every boot entry');
}

function registerKind(program: Command, io: CliIo, kind: ExtensionKind): void {
  const k = KINDS[kind];
  const dirs = k.hierarchies.map((h) => `${h}/`).join(' and ');
  const cmd = program.command(kind).description(`build, check and manage ${kind === 'sysext' ? 'system' : 'configuration'} extensions (${dirs}) with kairos-agent's layout`);

  cmd
    .command('build')
    .description(`build <dir> (holding ${dirs}), a bundle folder, or a container image's last layer into <out>/NAME${k.suffix}: a reproducible GPT disk image with dm-verity, signed with --key/--cert`)
    .argument(
      '<dir>',
      `folder holding ${dirs}; a type: ${kind} bundle folder; or an image (oci:<dir>[:tag], oci-archive:<file>, docker-archive:<file>, docker://<registry>/<repo>:<tag>) whose last layer holds ${dirs}`,
    )
    .option('--name <name>', `extension name (file NAME${k.suffix}, extension-release.NAME); default for a bundle folder: its sysext.name or name`)
    .option('-o, --output <dir>', 'output folder', '.')
    .option('--format <format>', 'ddi (GPT + dm-verity, what Kairos accepts; default) or plain (bare file system)')
    .option('--fs <fs>', "squashfs, erofs, or auto (default): erofs where this machine's systemd is >= 255 (as its systemd-repart --make-ddi, and so AuroraBoot, builds), else squashfs")
    .option('--key <pem>', 'private key to sign the verity root hash')
    .option('--cert <pem>', 'certificate of --key (enrolled in the node db / /run/verity.d)')
    .option('--id <id>', 'ID= of the OS it is for (default _any: any OS)')
    .option('--version-id <v>', 'VERSION_ID= the OS must have')
    .option(`--${kind}-level <level>`, `${k.levelKey}= the OS must have`)
    .option('--arch <arch>', 'ARCHITECTURE= and partition types: x86-64/amd64, arm64, … or _any (default: this machine); for a bundle folder: which of its platforms')
    .option('--reload-manager', 'EXTENSION_RELOAD_MANAGER=1: reload systemd after merging (for unit files)')
    .option('--no-compat-release', `write only extension-release.NAME, not also extension-release.NAME.${kind} (which systemd < 256 looks for in NAME${k.suffix})`)
    .option('--seed <uuid>', "seed for the disk UUIDs and verity salt (default: AuroraBoot's fixed seed)")
    .option('--image <location>', 'also package it as an OCI image with the .raw at its root: oci:<dir>[:tag] | oci-archive:<file> | docker-archive:<file>')
    .option('--plain-http', 'talk plain HTTP to the registry of an image source')
    .option('--json', 'print a JSON summary')
    .action(async (dir: string, o: Record<string, string | boolean | undefined>) => {
      const out = makePrinter(!!o.json, io);
      const format = o.format === undefined ? undefined : String(o.format);
      if (format !== undefined && format !== 'ddi' && format !== 'plain') throw new UserError(`--format: "${format}" must be ddi or plain`);
      const fs = o.fs === undefined ? undefined : String(o.fs);
      if (fs !== undefined && fs !== 'squashfs' && fs !== 'erofs' && fs !== 'auto') throw new UserError(`--fs: "${fs}" must be squashfs, erofs or auto`);
      const arch = o.arch === '_any' ? '_any' : systemdArch(typeof o.arch === 'string' ? o.arch : hostSystemdArch());
      const partitionArch = arch === '_any' ? hostSystemdArch() : arch;
      const levelOpt = o[`${kind}Level`];
      const epoch = sourceDateEpochFromEnv(io.env);
      const image = typeof o.image === 'string' ? parseImageArgument(o.image, '--image', { bare: false }) : undefined;
      if (image && capabilitiesOf(image).remote) throw new UserError('--image: build writes local images', 'push it afterwards with kbundle push');
      // Release fields given on the command line (for a bundle folder they override its sysext: section).
      const releaseFlags = {
        ...(o.id ? { id: String(o.id) } : {}),
        ...(o.versionId ? { versionId: String(o.versionId) } : {}),
        ...(levelOpt ? { level: String(levelOpt) } : {}),
        ...(o.reloadManager ? { reloadManager: true } : {}),
      };
      const common = {
        format: format as 'ddi' | 'plain' | undefined,
        fs: fs as 'squashfs' | 'erofs' | 'auto' | undefined,
        key: o.key as string | undefined,
        cert: o.cert as string | undefined,
        seed: o.seed as string | undefined,
        compatRelease: o.compatRelease !== false,
        sourceDateEpoch: epoch,
        onWarning: (m: string) => out.warn(m),
      };
      let r: import('../sysext/build.js').SysextBuildResult;
      let bundleMeta: { version?: string; description?: string } = {};
      let source: import('../sysext/from-image.js').ImageBuildSource | undefined;
      if (hasTransportPrefix(dir)) {
        if (!o.name) throw new UserError(`--name is required to build from an image`, `e.g. kbundle ${kind} build ${dir} --name myext`);
        const { buildSysextFromImage } = await lazy.fromImage();
        const platform = { os: 'linux', architecture: GOARCH[partitionArch] ?? partitionArch };
        const built = await buildSysextFromImage(
          dir,
          platform,
          { kind, name: String(o.name), outDir: String(o.output), ...common, arch: partitionArch, release: { ...releaseFlags, architecture: arch } },
          { plainHttp: !!o.plainHttp },
        );
        source = built.source;
        r = built;
      } else if (await pathExists(join(dir, 'bundle.yaml'))) {
        // A bundle folder: its bundle.yaml says what goes where, for which platforms.
        const loaded = await (await lazy.spec()).loadBundleSpec(dir);
        const platform = `linux/${GOARCH[partitionArch] ?? partitionArch}`;
        const { buildBundleExtension } = await lazy.pack();
        r = await buildBundleExtension(loaded, platform, String(o.output), {
          ...common,
          kind,
          ...(o.name ? { name: String(o.name) } : {}),
          release: { ...releaseFlags, ...(o.arch === '_any' ? { architecture: '_any' } : {}) },
        });
        bundleMeta = { version: loaded.spec.version, description: loaded.spec.description };
      } else {
        if (!o.name) throw new UserError(`--name is required: ${dir} has no bundle.yaml to take the name from`, `e.g. kbundle ${kind} build ${dir} --name myext`);
        const { buildSysext } = await lazy.build();
        r = await buildSysext({
          kind,
          name: String(o.name),
          tree: dir,
          outDir: String(o.output),
          ...common,
          arch: partitionArch,
          release: { ...releaseFlags, architecture: arch },
        });
      }
      const name = r.name;
      const lines = [`built ${r.path} (${r.format}, ${r.fs}, ${(r.size / 1048576).toFixed(1)} MiB)`];
      if (r.rootHash) lines.push(`verity root hash: ${r.rootHash}${r.signed ? ' (signed)' : ''}`);
      lines.push(`extension-release.${name}: ${r.release.trim().replace(/\n/g, ' ')}`);
      if (source) lines.push(`from ${source.image}@${source.manifestDigest}, last layer ${source.layerDigest} (${source.entries} entries)`);
      let imageInfo: { location: string; digest: string } | undefined;
      if (image) {
        const platform = `linux/${GOARCH[partitionArch] ?? 'amd64'}`;
        const { packageRaw, indexOf } = await lazy.pack();
        const { openDestination } = await lazy.open();
        // Layouts and OCI archives are tagged with the extension name, docker archives named <name>:latest.
        const dst = await openDestination(image, { defaultTag: name, defaultRepoTag: `${name}:latest` });
        try {
          const layout = dst.layout!;
          const p = await packageRaw(r, layout, { platform, epoch, kind, title: name, ...bundleMeta });
          const root = await indexOf([p], layout);
          if (dst.reference) await layout.tag(root, dst.reference);
          await dst.close(root);
          imageInfo = { location: dst.location, digest: root.digest };
        } catch (e) {
          await dst.close().catch(() => undefined);
          throw e;
        }
        lines.push(`image: ${imageInfo.location} (${imageInfo.digest})`);
      }
      out.result(lines.join('\n'), {
        path: r.path,
        fileName: r.fileName,
        format: r.format,
        fs: r.fs,
        size: r.size,
        rootHash: r.rootHash,
        signed: r.signed,
        release: r.release,
        seed: r.seed,
        partitions: r.partitions.map((p) => ({ type: p.dps?.name ?? p.typeUuid, uuid: p.uuid, offset: p.offset, size: p.size })),
        image: imageInfo,
        source: source && { image: source.image, manifestDigest: source.manifestDigest, layerDigest: source.layerDigest, entries: source.entries },
      });
    });

  cmd
    .command('check')
    .description("would a node merge this image? reads the GPT, verity and signature from the file, applies the image policy and systemd's matching rules")
    .argument('<raw>', 'the .raw image')
    .option('--os-release <file>', "the node's os-release")
    .option('--root <dir>', 'a node root file system (its os-release and systemd version are used)')
    .option(
      '--image-policy <policy>',
      `systemd image policy (default: Kairos's ${KAIROS_POLICY}; with --root the node's systemd-sysext drop-in's, else on a Trusted Boot node root=signed+absent:usr=signed+absent)`,
    )
    .option('--cert <pem>', 'a certificate the node trusts for signed images (repeatable; with --root also the firmware PK/KEK/db entries and verity.d)', collect)
    .option('--systemd-version <n>', 'systemd version on the node (default: from --root, else 256)')
    .option('--arch <arch>', "the node's architecture (default: this machine)")
    .option('--file-name <name>', 'the name the file will have on the node (default: its current name)')
    .option('--hierarchies <list>', HIERARCHIES_HELP)
    .option('--json', 'print a JSON verdict')
    .action(
      async (
        raw: string,
        o: { osRelease?: string; root?: string; imagePolicy?: string; cert?: string[]; systemdVersion?: string; arch?: string; fileName?: string; hierarchies?: string; json?: boolean },
      ) => {
        const out = makePrinter(!!o.json, io);
        const { checkImage, detectSystemdVersion, readOsRelease, readOsReleaseFile } = await lazy.check();
        if (!o.osRelease && !o.root) throw new UserError("check: give the node's --os-release <file> (or --root <dir>)");
        const fields = o.osRelease ? await readOsReleaseFile(o.osRelease) : (await readOsRelease(o.root!)).fields;
        const version = parseVersion(o.systemdVersion) ?? (o.root ? await detectSystemdVersion(o.root) : undefined);
        const { withCheckTrust } = await lazy.trust();
        const r = await withCheckTrust(o.root, { policy: o.imagePolicy, certs: o.cert, hierarchies: await hierarchiesFlag(o.hierarchies, kind), kind }, ({ policy, certs, hierarchies }) =>
          checkImage(raw, { kind, osRelease: fields, policy, certs, systemdVersion: version, arch: o.arch ? systemdArch(o.arch) : hostSystemdArch(), fileName: o.fileName, hierarchies }),
        );
        const text = [
          ...r.lines.map((l) => `${l.ok ? '✓' : '✗'} ${l.text}`),
          ...r.info.warnings.map((w) => `! ${w}`),
          r.ok ? `${r.info.fileName}: would be merged` : `${r.info.fileName}: would NOT be merged`,
        ].join('\n');
        out.result(text, {
          ok: r.ok,
          imageName: r.imageName,
          protection: r.protection,
          format: r.info.format,
          fsType: r.info.fsType,
          lines: r.lines,
          reasons: r.reasons,
          warnings: r.info.warnings,
          rootHash: r.info.verity?.check.rootHash.toString('hex'),
        });
        if (!r.ok) throw new KbError('REFUSED', `${r.info.fileName} would not be merged: ${r.reasons[0]}${r.reasons.length > 1 ? ` (and ${r.reasons.length - 1} more)` : ''}`);
      },
    );

  const rootOpt = (c: Command) => c.option('--root <dir>', 'node root file system', '/');

  rootOpt(
    cmd
      .command('install')
      .description(`install from oci:/docker:/container:<ref>, file:<path> or http(s)://… into /${k.storeDir} (checked against the node first)`)
      .argument('<uri>', 'where the image comes from')
      .option('--no-check', 'install without checking (as kairos-agent does)')
      .option(
        '--image-policy <policy>',
        `image policy to check against (default: the node's — the --image-policy of its systemd-sysext drop-in, else ${KAIROS_POLICY}, or signed-only when the root is a Trusted Boot node)`,
      )
      .option('--cert <pem>', "certificate the node trusts (repeatable; the root's firmware PK/KEK/db entries and verity.d are added)", collect)
      .option('--os-release <file>', "the node's os-release (default: the root's)")
      .option('--systemd-version <n>', 'systemd version on the node (default: from the root)')
      .option('--arch <arch>', "the node's architecture (default: this machine)")
      .option('--platform <os/arch>', 'image platform to pull (default: this machine)')
      .option('--hierarchies <list>', HIERARCHIES_HELP)
      .option('--key <pub.pem>', 'OCI sources: require a cosign signature by this public key before anything is extracted')
      .option('--policy <file>', 'OCI sources: require signatures as this trust policy says (containers-policy.json or kbundle YAML; default: the node policy under --root when it exists)')
      .option('--policy-base64 <data>', 'OCI sources: a self-contained trust policy, base64 (what kbundle rollout puts in a NodeOp command)')
      .option('--require-signature', 'refuse images without a valid signature (needs --key or --policy)')
      .option('--ignore-requires', "OCI sources: install even when the node does not meet the image's requires: (warned, and kept in the install record)")
      .option('--enable <state>', 'then enable what was installed for this boot state (active, passive, recovery or common)')
      .option('--now', 'with --enable: also link into /run and restart the unit when booted in that state (as sysext enable --now)')
      .option('--plain-http', 'talk plain HTTP to registries')
      .option('--json', 'print a JSON summary'),
  ).action(
    async (
      uri: string,
      o: {
        root: string;
        check: boolean;
        imagePolicy?: string;
        cert?: string[];
        osRelease?: string;
        systemdVersion?: string;
        arch?: string;
        platform?: string;
        hierarchies?: string;
        key?: string;
        policy?: string;
        policyBase64?: string;
        requireSignature?: boolean;
        enable?: string;
        now?: boolean;
        ignoreRequires?: boolean;
        plainHttp?: boolean;
        json?: boolean;
      },
    ) => {
      const out = makePrinter(!!o.json, io);
      const node: Node = { root: o.root, kind };
      const { installExtension, enableExtension } = await lazy.manage();
      if (o.enable !== undefined && !(BOOT_STATES as readonly string[]).includes(o.enable)) throw new UserError(`--enable: "${o.enable}" must be one of ${BOOT_STATES.join(', ')}`);
      if (o.now && o.enable === undefined) throw new UserError('--now goes with --enable <state>');
      const r = await installExtension(node, uri, {
        check: o.check,
        policy: o.imagePolicy,
        certs: o.cert,
        hierarchies: await hierarchiesFlag(o.hierarchies, kind),
        osReleaseFile: o.osRelease,
        systemdVersion: parseVersion(o.systemdVersion),
        arch: o.arch,
        platform: o.platform,
        registry: { plainHttp: o.plainHttp },
        verify: await verifierFromFlags(o),
        ignoreRequires: o.ignoreRequires,
        onWarning: (m: string) => out.warn(m),
      });
      for (const c of r.checks) for (const w of c.info.warnings) out.warn(`${c.info.fileName}: ${w}`);
      const from = r.digest ? ` from ${r.digest}${r.verified ? `, signed by ${r.verified}` : ''}` : '';
      const enabled: string[] = [];
      if (o.enable) for (const n of r.installed) enabled.push(...(await enableExtension(node, n, o.enable as BootState, !!o.now)).messages);
      out.result([...r.installed.map((n) => `installed ${n} into /${k.storeDir}${r.checks.length ? ' (checked)' : ''}${from}`), ...enabled].join('\n'), {
        installed: r.installed,
        checked: r.checks.length > 0,
        source: r.source,
        digest: r.digest,
        verified: r.verified,
        warnings: r.checks.flatMap((c) => c.info.warnings),
        ...(o.enable ? { enabled: enabled } : {}),
      });
    },
  );

  rootOpt(stateOptions(cmd.command('list').description('list installed extensions (or those enabled in a boot state)')).option('--json', 'print JSON')).action(
    async (o: StateFlags & { root: string; json?: boolean }) => {
      const { parseBootState, listExtensions } = await lazy.manage();
      const state = parseBootState(o, false, 'list');
      const items = await listExtensions({ root: o.root, kind }, state);
      const text = items.length
        ? items.map((i) => `${i.name}${i.enabled.length ? `  enabled: ${i.enabled.join(', ')}` : ''}${i.running ? `  (in /${k.runDir})` : ''}`).join('\n')
        : `no ${kind === 'sysext' ? 'system' : 'configuration'} extensions found`;
      makePrinter(!!o.json, io).result(text, items);
    },
  );

  for (const verb of ['enable', 'disable'] as const) {
    rootOpt(
      stateOptions(cmd.command(verb).description(`${verb} an installed extension for a boot state`).argument('<name>', 'extension (file name, or NAME)'))
        .option('--now', `also ${verb === 'enable' ? 'link into' : 'unlink from'} /${k.runDir} and restart ${k.unit} when booted in that state`)
        .option('--json', 'print JSON'),
    ).action(async (name: string, o: StateFlags & { root: string; now?: boolean; json?: boolean }) => {
      const { parseBootState, enableExtension, disableExtension } = await lazy.manage();
      const state = parseBootState(o, true, verb) as BootState;
      const node: Node = { root: o.root, kind };
      const r = verb === 'enable' ? await enableExtension(node, name, state, !!o.now) : await disableExtension(node, name, state, !!o.now);
      makePrinter(!!o.json, io).result(r.messages.join('\n'), r);
    });
  }

  rootOpt(
    cmd
      .command('remove')
      .description('disable everywhere and delete an installed extension')
      .argument('<name>', 'extension (file name, or NAME)')
      .option('--now', `also unlink from /${k.runDir} and restart ${k.unit}`)
      .option('--json', 'print JSON'),
  ).action(async (name: string, o: { root: string; now?: boolean; json?: boolean }) => {
    const { removeExtension } = await lazy.manage();
    const r = await removeExtension({ root: o.root, kind }, name, !!o.now);
    makePrinter(!!o.json, io).result(r.messages.join('\n'), r);
  });
}

/** `kbundle sysext …` and `kbundle confext …`. */
export function registerSysext(program: Command, io: CliIo): void {
  registerKind(program, io, 'sysext');
  registerKind(program, io, 'confext');
}
