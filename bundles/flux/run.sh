#!/bin/sh
# flux bundle: installs the flux CLI and a one-shot systemd unit that bootstraps the cluster
# with Flux once k3s is up, from the flux block of the cloud-config (flux-bootstrap.sh).
# Port of kairos-io/community-bundles flux/run.sh: same files in the same places, and the unit
# is enabled with the link `systemctl enable` makes (k3s.service.wants), without needing a
# running systemd. Differences: files are written atomically, and with KBUNDLE_ROOT set
# (kbundle install --root, tests) every path is under it.
set -eu
BUNDLE=flux
DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=${KBUNDLE_ROOT:-}
ROOT=${ROOT%/}

# install_file SRC DST MODE: copy through a temp file, then rename.
install_file() {
  mkdir -p "$(dirname "$2")"
  cp "$1" "$2.kbundle-tmp"
  chmod "$3" "$2.kbundle-tmp"
  mv -f "$2.kbundle-tmp" "$2"
}

if ! command -v systemctl >/dev/null 2>&1; then
  echo "$BUNDLE: warning: no systemd on this node: flux is installed, but the cluster is not bootstrapped (flux-bootstrap.service needs systemd)" >&2
fi
install_file "$DIR/flux" "$ROOT/usr/local/bin/flux" 0755
install_file "$DIR/assets/flux-bootstrap.sh" "$ROOT/usr/local/bin/flux-bootstrap.sh" 0755
install_file "$DIR/assets/flux-bootstrap.service" "$ROOT/etc/systemd/system/flux-bootstrap.service" 0644
# WantedBy=k3s.service: the unit runs whenever k3s starts (it exits early once bootstrapped).
mkdir -p "$ROOT/etc/systemd/system/k3s.service.wants"
ln -sfn /etc/systemd/system/flux-bootstrap.service "$ROOT/etc/systemd/system/k3s.service.wants/flux-bootstrap.service"
echo "$BUNDLE: installed flux and enabled flux-bootstrap.service"
