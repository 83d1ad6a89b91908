#!/usr/bin/env bash
# Prerequisites of the arm64 proof (npm run test:sea): qemu-aarch64-static, and an arm64 glibc
# sysroot (libc6, libstdc++6, libgcc-s1 unpacked from Debian's arm64 packages) in
# node_modules/.cache/kbundle-arm64-sysroot. Prints the sysroot path.
set -euo pipefail
cd "$(dirname "$0")/.."
sysroot="$PWD/node_modules/.cache/kbundle-arm64-sysroot"
export DEBIAN_FRONTEND=noninteractive
if ! command -v qemu-aarch64-static >/dev/null; then
  apt-get update -qq && apt-get install -y -qq qemu-user-static >/dev/null
fi
if [ ! -e "$sysroot/lib/ld-linux-aarch64.so.1" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
  fi
  apt-get update -qq
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  chmod 755 "$work" # apt downloads as _apt
  (cd "$work" && apt-get download -qq libc6:arm64 libstdc++6:arm64 libgcc-s1:arm64 >/dev/null)
  rm -rf "$sysroot.tmp" && mkdir -p "$sysroot.tmp"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$sysroot.tmp"; done
  rm -rf "$sysroot" && mv "$sysroot.tmp" "$sysroot"
fi
echo "$sysroot"
