import { resolve } from 'node:path';
import type { Command } from 'commander';
import { UserError } from '../errors.js';
import type { CliIo } from './io.js';
import { makePrinter } from './output.js';

interface ImageFlags {
  output: string;
  platform?: string[];
  executable?: string[];
  sysroot?: string[];
  caFile: string;
  json?: boolean;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

function pairs(list: string[] | undefined, flag: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const v of list ?? []) {
    const i = v.indexOf('=');
    if (i <= 0) throw new UserError(`${flag} ${v}: write <os/arch>=<path>, e.g. ${flag} linux/arm64=…`);
    m.set(v.slice(0, i), v.slice(i + 1));
  }
  return m;
}

export function registerImage(program: Command, io: CliIo): void {
  program
    .command('image')
    .description('write the kbundle container image (node executable, its libraries, CA certificates; entrypoint kbundle) for operator NodeOps and musl nodes')
    .option('-o, --output <oci:dir[:tag]>', 'OCI layout to write (push it with kbundle push)', 'oci:out/kbundle-image:kbundle')
    .option('--platform <os/arch>', "platform to include (repeatable; default: this machine's)", collect)
    .option('--executable <os/arch=file>', 'the node executable for a platform (default: dist/sea/kbundle-<os>-<arch> from npm run sea)', collect)
    .option('--sysroot <os/arch=dir>', "where that platform's shared libraries are (default /, for this machine's architecture)", collect)
    .option('--ca-file <pem>', 'CA bundle to carry as /etc/ssl/certs/ca-certificates.crt', '/etc/ssl/certs/ca-certificates.crt')
    .option('--json', 'print a JSON summary')
    .action(async (o: ImageFlags) => {
      const out = makePrinter(!!o.json, io);
      const [{ isLayoutLocation, parseImageArgument }, { OciLayout }, { buildNodeImage }, { hostPlatform }, { sourceDateEpochFromEnv }] = await Promise.all([
        import('../store/transport.js'),
        import('../store/oci-layout.js'),
        import('../sea/image.js'),
        import('../oci/platform.js'),
        import('../builder/epoch.js'),
      ]);
      const loc = parseImageArgument(o.output, '-o', { bare: false });
      if (!isLayoutLocation(loc)) throw new UserError(`-o ${o.output}: kbundle image writes an OCI layout (oci:<dir>[:tag])`, 'then: kbundle push oci:<dir>:<tag> <registry>/<repo>:<tag>');
      const host = hostPlatform();
      const hostName = `${host.os}/${host.architecture}`;
      const executables = pairs(o.executable, '--executable');
      const sysroots = pairs(o.sysroot, '--sysroot');
      const platforms = o.platform?.length ? o.platform : [hostName];
      const spec = platforms.map((platform) => {
        const sysroot = sysroots.get(platform) ?? (platform === hostName ? '/' : undefined);
        if (!sysroot)
          throw new UserError(
            `--platform ${platform}: name where its libraries are with --sysroot ${platform}=<dir>`,
            "e.g. Debian's libc6, libstdc++6 and libgcc-s1 for that architecture unpacked with dpkg-deb -x (test/setup-arm64.sh does it)",
          );
        return { platform, sysroot: resolve(sysroot), executable: resolve(executables.get(platform) ?? `dist/sea/kbundle-${platform.replace('/', '-')}`) };
      });
      const layout = await OciLayout.open(loc.path, { create: true });
      const root = await buildNodeImage(layout, { platforms: spec, caFile: o.caFile, epoch: sourceDateEpochFromEnv(io.env), version: program.version() ?? '0.0.0' });
      const tag = loc.ref || 'kbundle';
      await layout.tag(root, tag);
      out.result(`wrote oci:${loc.path}:${tag} (${platforms.join(', ')})\ndigest: ${root.digest}`, { location: `oci:${loc.path}:${tag}`, digest: root.digest, platforms });
    });
}
