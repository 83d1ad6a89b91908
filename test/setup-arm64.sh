#!/usr/bin/env bash
# Prerequisites of the arm64 proof (npm run test:sea): qemu-aarch64-static, and an arm64 glibc
# sysroot (libc6, libstdc++6, libgcc-s1 unpacked from Debian's arm64 packages) in
# node_modules/.cache/kbundle-arm64-sysroot. Prints the sysroot path.
# The sysroot also holds the programs `kbundle image` puts next to the executable (NODE_TOOLS in
# src/sea/image.ts) and the libraries they load.
set -euo pipefail
cd "$(dirname "$0")/.."
sysroot="$PWD/node_modules/.cache/kbundle-arm64-sysroot"
export DEBIAN_FRONTEND=noninteractive
if ! command -v qemu-aarch64-static >/dev/null; then
  apt-get update -qq && apt-get install -y -qq qemu-user-static >/dev/null
fi
packages="libc6 libstdc++6 libgcc-s1 dash coreutils util-linux mount squashfs-tools erofs-utils attr zstd openssl
  libmount1 libblkid1 libselinux1 libpcre2-8-0 liblzma5 liblzo2-2 liblz4-1 libzstd1 zlib1g libssl3"
packages=$(echo $packages)
if [ ! -e "$sysroot/lib/ld-linux-aarch64.so.1" ] || [ "$(cat "$sysroot/.packages" 2>/dev/null)" != "$packages" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
  fi
  apt-get update -qq
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  chmod 755 "$work" # apt downloads as _apt
  # shellcheck disable=SC2086 # one word per package
  (cd "$work" && apt-get download -qq $(printf '%s:arm64 ' $packages) >/dev/null)
  rm -rf "$sysroot.tmp" && mkdir -p "$sysroot.tmp"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$sysroot.tmp"; done
  echo "$packages" >"$sysroot.tmp/.packages"
  rm -rf "$sysroot" && mv "$sysroot.tmp" "$sysroot"
fi
echo "$sysroot"
