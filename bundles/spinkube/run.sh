#!/bin/sh
# spinkube bundle: SpinKube (spin-operator 0.4.0, its CRDs, the wasmtime-spin-v2 RuntimeClass,
# the containerd-shim-spin SpinAppExecutor, the KWasm operator) and, when
# spinkube.installCertManager is true, cert-manager v1.14.5, for k3s.
# Upstream's run.sh applies build-time downloads with `k3s kubectl apply` and waits for each
# step; this port places the same resources in the k3s manifests folder instead (Helm charts as
# HelmChart resources), so it also works at first boot before the API server is up: k3s applies
# them in name order and retries what needs a CRD or webhook that is not there yet.
# KBUNDLE_ROOT prefixes every path (kbundle install --root, tests).
set -eu
BUNDLE=spinkube
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

INSTALL_CERT_MANAGER=$(value spinkube.installCertManager false '^(true|false)$')

n=0
# place ASSET: copy assets/ASSET into DEST under the same name (temp file + mv).
place() {
  cp "$DIR/assets/$1" "$DEST/$1.kbundle-tmp"
  mv -f "$DEST/$1.kbundle-tmp" "$DEST/$1"
  n=$((n + 1))
}

mkdir -p "$DEST"
if [ "$INSTALL_CERT_MANAGER" = true ]; then place cert-manager-helmchart.yaml; fi
place kwasm-operator-helmchart.yaml
place spin-operator-crds.yaml
place spin-operator-runtime-class.yaml
place spin-operator-shim-executor.yaml
place spin-operator-helmchart.yaml
echo "$BUNDLE: placed $n manifest(s) for k3s in ${DEST#"$ROOT"}"
