#!/bin/sh
# kairos bundle: the Kairos helm-charts as k3s HelmChart resources. kairos-crds always;
# entangle, entangle-proxy and osbuilder when enabled in the cloud-config.
# Port of kairos-io/community-bundles kairos/run.sh: same keys, defaults, file names and
# "@VERSION@" templating; values are checked before they reach a manifest, files are written
# atomically, and KBUNDLE_ROOT prefixes every path (kbundle install --root, tests).
set -eu
BUNDLE=kairos
DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=${KBUNDLE_ROOT:-}
ROOT=${ROOT%/}
DEST="$ROOT${K3S_MANIFEST_DIR:-/var/lib/rancher/k3s/server/manifests}"
DEST=${DEST%/}

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

VERSION_RE='^[0-9A-Za-z][0-9A-Za-z._+-]*$'
BOOL_RE='^(true|false)$'
# renovate: depName=kairos-crds repoUrl=https://kairos-io.github.io/helm-charts
CRDS_VERSION=$(value kairos.crds.version 0.0.13 "$VERSION_RE")
ENTANGLE_ENABLE=$(value kairos.entangle.enable false "$BOOL_RE")
# renovate: depName=entangle repoUrl=https://kairos-io.github.io/helm-charts
ENTANGLE_VERSION=$(value kairos.entangle.version 0.2.4 "$VERSION_RE")
ENTANGLEPROXY_ENABLE=$(value kairos.entangleProxy.enable false "$BOOL_RE")
# renovate: depName=entangle-proxy repoUrl=https://kairos-io.github.io/helm-charts
ENTANGLEPROXY_VERSION=$(value kairos.entangleProxy.version 0.0.5 "$VERSION_RE")
OSBUILDER_ENABLE=$(value kairos.osbuilder.enable false "$BOOL_RE")
# renovate: depName=osbuilder repoUrl=https://kairos-io.github.io/helm-charts
OSBUILDER_VERSION=$(value kairos.osbuilder.version 0.7.2 "$VERSION_RE")

n=0
# place ASSET FILE VERSION: render @VERSION@ into DEST/FILE (temp file + mv).
place() {
  sed "s|@VERSION@|$3|g" "$DIR/assets/$1" > "$DEST/$2.kbundle-tmp"
  mv -f "$DEST/$2.kbundle-tmp" "$DEST/$2"
  n=$((n + 1))
}

mkdir -p "$DEST"
place crd.yaml kairos-crds.yaml "$CRDS_VERSION"
if [ "$ENTANGLE_ENABLE" = true ]; then place entangle.yaml kairos-entangle.yaml "$ENTANGLE_VERSION"; fi
if [ "$ENTANGLEPROXY_ENABLE" = true ]; then place entangle-proxy.yaml kairos-entangle-proxy.yaml "$ENTANGLEPROXY_VERSION"; fi
if [ "$OSBUILDER_ENABLE" = true ]; then place osbuilder.yaml kairos-osbuilder.yaml "$OSBUILDER_VERSION"; fi
echo "$BUNDLE: placed $n manifest(s) for k3s in ${DEST#"$ROOT"}"
