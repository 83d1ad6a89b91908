#!/bin/sh
# multus bundle: Multus CNI for k3s. Installs the multus binary where k3s looks for CNI
# binaries, the CNI plugins named in multus.cni_plugins, the Multus CRD and RBAC manifest, a
# kubeconfig with a client certificate signed by the k3s client CA, and 00-multus.conflist
# wrapping the node's primary CNI configuration.
# Port of kairos-io/community-bundles multus/run.sh: same keys, defaults, paths and outputs.
# Differences: the folder keys upstream's README documents (cni_bin_dir, multus_bin_dir,
# cni_conf_dir, ca_path, cluster_server) are honoured (upstream's run.sh ignores them); every
# value is checked; the key and certificate are made in a private temp folder; and
# KBUNDLE_ROOT prefixes every path (kbundle install --root, tests). Needs openssl and jq.
set -eu
BUNDLE=multus
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
  case "$v" in null|"<nil>"|"[]") v="" ;; esac
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
# list KEY: a YAML list ("- a" lines) or a comma/space separated string, as words.
list() {
  config_get "$1" | sed -e 's/^[[:space:]]*-[[:space:]]*//' -e 's/,/ /g' | tr '\n' ' '
}

PATH_RE='^/[A-Za-z0-9._/-]*$'
NAME_RE='^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$'
K3S_MANIFEST_DIR=${K3S_MANIFEST_DIR:-/var/lib/rancher/k3s/server/manifests}
CNI_BIN_DIR=$(value multus.cni_bin_dir /opt/cni/bin "$PATH_RE")
MULTUS_BIN_DIR=$(value multus.multus_bin_dir /var/lib/rancher/k3s/data/current/bin "$PATH_RE")
CNI_CONF_DIR=$(value multus.cni_conf_dir /var/lib/rancher/k3s/agent/etc/cni/net.d "$PATH_RE")
CA_PATH=$(value multus.ca_path /var/lib/rancher/k3s/server/tls "$PATH_RE")
CRT_VALIDITY=$(value multus.crt_validity 3650 '^[1-9][0-9]{0,5}$')
CLUSTER_SERVER=$(value multus.cluster_server https://127.0.0.1:6443 '^https://[][A-Za-z0-9.:-]+(/[A-Za-z0-9._/-]*)?$')
NAMESPACE_ISOLATION=$(value multus.namespace_isolation false '^(true|false)$')
PRIMARY_CONFIG=$(value multus.primary_config '' '^(/[A-Za-z0-9._/-]*)?$')

CNI_PLUGINS=$(list multus.cni_plugins)
for plugin in $CNI_PLUGINS; do
  printf '%s\n' "$plugin" | grep -Eq "$NAME_RE" && [ -f "$DIR/plugins/$plugin" ] ||
    fail "multus.cni_plugins: no CNI plugin '$plugin' in this bundle (it has: $(ls "$DIR/plugins" | tr '\n' ' '))"
done
GLOBAL_NAMESPACES=""
for ns in $(list multus.global_namespaces); do
  printf '%s\n' "$ns" | grep -Eq "$NAME_RE" || fail "multus.global_namespaces: '$ns' is not a namespace name"
  GLOBAL_NAMESPACES="${GLOBAL_NAMESPACES:+$GLOBAL_NAMESPACES,}$ns"
done

if [ -z "$PRIMARY_CONFIG" ]; then
  # The first *.conflist in name order that is not ours, as upstream does.
  for config in "$ROOT$CNI_CONF_DIR"/*.conflist; do
    [ -f "$config" ] || continue
    if [ "$config" != "$ROOT$CNI_CONF_DIR/00-multus.conflist" ]; then
      PRIMARY_CONFIG=${config#"$ROOT"}
      break
    fi
  done
fi
[ -n "$PRIMARY_CONFIG" ] || fail "no primary CNI configuration (*.conflist) in $CNI_CONF_DIR; set multus.primary_config"
[ -f "$ROOT$PRIMARY_CONFIG" ] || fail "multus.primary_config: $PRIMARY_CONFIG does not exist"
for tool in openssl jq base64; do
  command -v "$tool" >/dev/null 2>&1 || fail "needs $tool on the node"
done
for f in client-ca.crt client-ca.key server-ca.crt; do
  [ -f "$ROOT$CA_PATH/$f" ] || fail "no $CA_PATH/$f: multus signs its client certificate with the k3s client CA (run on a k3s server)"
done

# install_file SRC DST MODE: copy through a temp file, then rename.
install_file() {
  cp "$1" "$2.kbundle-tmp"
  chmod "$3" "$2.kbundle-tmp"
  mv -f "$2.kbundle-tmp" "$2"
}

mkdir -p "$ROOT$CNI_BIN_DIR" "$ROOT$MULTUS_BIN_DIR" "$ROOT$K3S_MANIFEST_DIR" "$ROOT$CNI_CONF_DIR/multus.d"
install_file "$DIR/multus" "$ROOT$MULTUS_BIN_DIR/multus" 0755
for plugin in $CNI_PLUGINS; do
  install_file "$DIR/plugins/$plugin" "$ROOT$CNI_BIN_DIR/$plugin" 0755
done
install_file "$DIR/manifests.yaml" "$ROOT$K3S_MANIFEST_DIR/multus.yaml" 0644

# A normal user "multus" with an X509 client certificate (the manifests bind its ClusterRole).
work=$(mktemp -d "$DIR/.multus-crt.XXXXXX")
trap 'rm -rf "$work"' EXIT
(
  umask 077
  openssl ecparam -name prime256v1 -genkey -noout -out "$work/multus.key"
  openssl req -new -key "$work/multus.key" -out "$work/multus.csr" -subj /CN=multus
  openssl x509 -req -in "$work/multus.csr" -CA "$ROOT$CA_PATH/client-ca.crt" -CAkey "$ROOT$CA_PATH/client-ca.key" \
    -CAcreateserial -CAserial "$work/client-ca.srl" -out "$work/multus.crt" -days "$CRT_VALIDITY"
  cat > "$ROOT$CNI_CONF_DIR/multus.d/multus.kubeconfig.kbundle-tmp" <<YAML
# Kubeconfig file for Multus CNI plugin.
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $CLUSTER_SERVER
    certificate-authority-data: "$(base64 -w0 "$ROOT$CA_PATH/server-ca.crt")"
users:
- name: multus
  user:
    client-certificate-data: "$(base64 -w0 "$work/multus.crt")"
    client-key-data: "$(base64 -w0 "$work/multus.key")"
contexts:
- name: multus-context
  context:
    cluster: local
    user: multus
current-context: multus-context
YAML
  mv -f "$ROOT$CNI_CONF_DIR/multus.d/multus.kubeconfig.kbundle-tmp" "$ROOT$CNI_CONF_DIR/multus.d/multus.kubeconfig"

  jq < "$ROOT$PRIMARY_CONFIG" > "$ROOT$CNI_CONF_DIR/00-multus.conflist.kbundle-tmp" \
    --arg namespaceIsolation "$NAMESPACE_ISOLATION" \
    --arg globalNamespaces "$GLOBAL_NAMESPACES" \
    --arg kubeconfig "$CNI_CONF_DIR/multus.d/multus.kubeconfig" \
    '
      {
        cniVersion: .cniVersion,
        name: "multus-cni-network",
        plugins: [{
          type: "multus",
          capabilities: [.plugins[].capabilities] | add,
          namespaceIsolation: ($namespaceIsolation == "true"),
          globalNamespaces: $globalNamespaces,
          kubeconfig: $kubeconfig,
          delegates: [.]
        }]
      }
    '
  mv -f "$ROOT$CNI_CONF_DIR/00-multus.conflist.kbundle-tmp" "$ROOT$CNI_CONF_DIR/00-multus.conflist"
)
echo "$BUNDLE: installed multus, plugins: ${CNI_PLUGINS:-none}; wrapped $PRIMARY_CONFIG"
