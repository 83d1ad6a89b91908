#!/usr/bin/env bash
# Test prerequisites: the real peers the suites use as witnesses, installed when missing,
# and a fresh build of the CLI (tests spawn dist/src/cli/kbundle.cjs, which runs dist/).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v openssl >/dev/null || need+=(openssl)
command -v mksquashfs >/dev/null || need+=(squashfs-tools)
command -v mkfs.erofs >/dev/null || need+=(erofs-utils)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v systemd-dissect >/dev/null || need+=(systemd-container)
command -v veritysetup >/dev/null || need+=(cryptsetup-bin)
command -v sfdisk >/dev/null || need+=(fdisk)
command -v zstd >/dev/null || need+=(zstd)
command -v pigz >/dev/null || need+=(pigz)
command -v setfattr >/dev/null || need+=(attr)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test/setup.sh: missing ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "test/setup.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# One bundled CLI (dist/cli) starts in half the time of ~150 separate modules; tsc output (dist/src) is kept for tests.
npm run --silent build

# The node executables (dist/sea, and bundles/kbundle/assets for the catalog bundle): the
# catalog suites build bundles/kbundle from them, the sea suites run them.
node dist/src/sea/build.js >/dev/null
