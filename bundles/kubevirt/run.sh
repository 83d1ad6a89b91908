#!/bin/sh
# kubevirt bundle: the KubeVirt and CDI operators with their custom resources, plus
# kubevirt-manager when kubevirt.manager is true.
# Port of kairos-io/community-bundles kubevirt/run.sh: the same files land in the k3s manifests
# folder under the same names (kubevirt-manager's cdi-cr.yaml and kubevirt-cr.yaml replace the
# plain ones). Added: k0s placement (/var/lib/k0s/manifests/kubevirt/), the value is checked,
# files are written atomically, and KBUNDLE_ROOT prefixes every path.
set -eu
BUNDLE=kubevirt
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

MANAGER=$(value kubevirt.manager false '^(true|false)$')

# Distro as kbundle's generated scripts decide it: kubevirt.distro, k0s/k3s.enabled, the node.
distro=$(value kubevirt.distro auto '^(auto|k3s|k0s)$')
if [ "$distro" = auto ]; then
  if [ "$(config_get k0s.enabled)" = true ] || [ "$(config_get '"k0s-worker".enabled')" = true ]; then distro=k0s
  elif [ "$(config_get k3s.enabled)" = true ] || [ "$(config_get '"k3s-agent".enabled')" = true ]; then distro=k3s
  elif [ -d "$ROOT/var/lib/k0s" ] && [ ! -d "$ROOT/var/lib/rancher/k3s" ]; then distro=k0s
  else distro=k3s
  fi
fi
case "$distro" in
  k3s) DEST="$ROOT${K3S_MANIFEST_DIR:-/var/lib/rancher/k3s/server/manifests}" ;;
  *) DEST="$ROOT${K0S_MANIFEST_DIR:-/var/lib/k0s/manifests}/$BUNDLE" ;;
esac
DEST=${DEST%/}

n=0
# place_all FOLDER: every file of the folder into DEST under its own name (temp file + mv).
place_all() {
  for f in "$DIR/$1"/*; do
    [ -f "$f" ] || continue
    name=$(basename "$f")
    cp "$f" "$DEST/$name.kbundle-tmp"
    mv -f "$DEST/$name.kbundle-tmp" "$DEST/$name"
    n=$((n + 1))
  done
}

mkdir -p "$DEST"
place_all assets
if [ "$MANAGER" = true ]; then place_all kubevirt-manager-manifests; fi
echo "$BUNDLE: placed $n manifest(s) for $distro in ${DEST#"$ROOT"}"
