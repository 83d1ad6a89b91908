#!/bin/sh
# edgevpn bundle: installs the edgevpn binary and an edgevpn service (systemd or openrc,
# whichever the node has) that reads its token from the cloud-config key edgevpn.token.
# Port of kairos-io/community-bundles edgevpn/run.sh: same paths, unit and init script, the
# same enablement (a multi-user.target.wants link; the openrc default runlevel). Differences:
# the token is checked (base64 characters only) and its file is mode 0600; files are written
# atomically; with KBUNDLE_ROOT set (kbundle install --root, tests) every path is under it
# and nothing is started on the running system.
set -eu
BUNDLE=edgevpn
DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=${KBUNDLE_ROOT:-}
ROOT=${ROOT%/}

fail() { echo "$BUNDLE: $*" >&2; exit 1; }
# kairos-agent prints YAML: null when unset, strings that read as another type quoted ("1.0").
config_get() {
  v=""
  if command -v kairos-agent >/dev/null 2>&1; then
    v=$(kairos-agent config get "$1" 2>/dev/null) || v=""
  fi
  case "$v" in null|"<nil>") v="" ;; esac
  case "$v" in
    \"*\") v=${v#\"}; v=${v%\"} ;;
    \'*\') v=${v#\'}; v=${v%\'} ;;
  esac
  printf '%s' "$v"
}
# value KEY DEFAULT PATTERN: the configured value (or the default), refused unless it matches.
value() {
  v=$(config_get "$1")
  [ -n "$v" ] || v=$2
  if ! printf '%s\n' "$v" | grep -Eq "$3" || [ "$(printf '%s' "$v" | wc -l)" -ne 0 ]; then
    fail "$1: '$v' is not valid (must match $3)"
  fi
  printf '%s' "$v"
}
# install_file SRC DST MODE: copy through a temp file, then rename.
install_file() {
  mkdir -p "$(dirname "$2")"
  cp "$1" "$2.kbundle-tmp"
  chmod "$3" "$2.kbundle-tmp"
  mv -f "$2.kbundle-tmp" "$2"
}
# write_secret DST TEXT: a 0600 file with TEXT and a newline.
write_secret() {
  mkdir -p "$(dirname "$1")"
  (umask 077 && printf '%s\n' "$2" > "$1.kbundle-tmp")
  mv -f "$1.kbundle-tmp" "$1"
}

# An edgevpn token is base64 (of its YAML network config); anything else could inject lines
# into the environment file, which openrc sources as shell.
TOKEN=$(value edgevpn.token '' '^[A-Za-z0-9+/=_.-]*$')

install_file "$DIR/edgevpn" "$ROOT/usr/local/bin/edgevpn" 0755

if command -v systemctl >/dev/null 2>&1; then
  echo "$BUNDLE: setting up edgevpn for systemd"
  write_secret "$ROOT/etc/systemd/system.conf.d/edgevpn-kairos.env" "EDGEVPNTOKEN=$TOKEN"
  install_file "$DIR/assets/edgevpn.service" "$ROOT/etc/systemd/system/edgevpn.service" 0644
  # What `systemctl enable` makes, without needing a running systemd (as upstream does).
  mkdir -p "$ROOT/etc/systemd/system/multi-user.target.wants"
  ln -sfn /etc/systemd/system/edgevpn.service "$ROOT/etc/systemd/system/multi-user.target.wants/edgevpn.service"
  if [ -n "$ROOT" ]; then
    echo "$BUNDLE: installed under $ROOT; the service starts on its next boot"
  elif systemctl is-system-running >/dev/null 2>&1; then
    systemctl start edgevpn
  else
    echo "$BUNDLE: systemd is available but not running; the service starts on the next boot"
  fi
elif command -v rc-update >/dev/null 2>&1; then
  echo "$BUNDLE: setting up edgevpn for openrc"
  write_secret "$ROOT/etc/conf.d/edgevpn" "export EDGEVPNTOKEN=$TOKEN"
  install_file "$DIR/assets/edgevpn.openrc" "$ROOT/etc/init.d/edgevpn" 0755
  if [ -n "$ROOT" ]; then
    # What `rc-update add edgevpn default` makes.
    mkdir -p "$ROOT/etc/runlevels/default"
    ln -sfn /etc/init.d/edgevpn "$ROOT/etc/runlevels/default/edgevpn"
    echo "$BUNDLE: installed under $ROOT; the service starts on its next boot"
  else
    rc-update add edgevpn default
    rc-service edgevpn start || true
  fi
else
  echo "$BUNDLE: warning: neither systemd nor openrc detected; edgevpn is installed but no service is set up" >&2
fi
