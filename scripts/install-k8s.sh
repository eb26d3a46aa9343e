#!/usr/bin/env bash
# Installs a Kubernetes control plane for the Virtual Kubelet node's tests
# (k8snode, internal/k8stest): etcd from Debian (apt), and kube-apiserver,
# kube-scheduler, kube-controller-manager and kubectl built from the Go module
# proxy into a cache outside the repository, only when they are missing.
#
# k8s.io/kubernetes cannot be `go install`ed (its go.mod has replace
# directives pointing at its staging tree), so a tiny wrapper module requires
# it and replaces each staging module with its published k8s.io/X v0.N.M
# version (DESIGN.md section 10). The replace list is read from the pinned
# release's own go.mod, so it matches that release exactly.
#
# Cache directory (first that applies):
#   $MICROAGENT_K8S_CACHE
#   $XDG_CACHE_HOME/microagent/k8s
#   /var/cache/microagent/k8s            (when run as root)
#   $HOME/.cache/microagent/k8s
# The binaries land in <cache>/v<version>/; internal/k8stest looks there.
#
# Cost on a fresh machine: a few minutes of downloads, then ~6 min and ~2.9 GB
# RAM to compile on 2 cores; ~330 MB stripped for the four binaries. Prints the
# binaries' directory on success.
set -euo pipefail

VERSION="${K8S_VERSION:-1.37.2}"
# The staging modules are published as v0.<minor>.<patch>.
STAGING="v0.${VERSION#*.}"
BINS=(kube-apiserver kube-scheduler kube-controller-manager kubectl)

# etcd: Debian's etcd-server (3.4) works with kube-apiserver 1.37.
if ! command -v etcd >/dev/null; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
    $SUDO apt-get update -q
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends etcd-server
  # The package enables a system etcd on 2379; the tests start their own on
  # free ports and need none running.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
fi

if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH=$PATH:/usr/local/go/bin
fi
command -v go >/dev/null || { echo "install-k8s: Go is needed: https://go.dev/doc/install" >&2; exit 1; }

if [ -n "${MICROAGENT_K8S_CACHE:-}" ]; then
  cache=$MICROAGENT_K8S_CACHE
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
  cache=$XDG_CACHE_HOME/microagent/k8s
elif [ "$(id -u)" = 0 ]; then
  cache=/var/cache/microagent/k8s
else
  cache=$HOME/.cache/microagent/k8s
fi
dest=$cache/v$VERSION

have() {
  local b
  for b in "${BINS[@]}"; do [ -x "$dest/$b" ] || return 1; done
}
if have; then
  echo "$dest"
  exit 0
fi

mkdir -p -m 0700 "$cache"
# One build at a time: a second caller waits, then finds the binaries.
exec 9>"$cache/.lock"
flock 9
if have; then
  echo "$dest"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/k8sbin.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

echo "install-k8s: fetching k8s.io/kubernetes@v$VERSION's go.mod" >&2
gomod=$(GO111MODULE=on GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$VERSION" |
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
if [ -z "$gomod" ] || [ ! -f "$gomod" ]; then
  echo "install-k8s: could not locate k8s.io/kubernetes v$VERSION's go.mod in the module cache" >&2
  exit 1
fi
# The samples are not published at the release's version and nothing built
# here imports them.
replaces=$(sed -n '/^replace (/,/^)/s/^[[:space:]]*\(k8s\.io\/[a-z0-9-]*\) => \.\/staging\/.*/\1/p' "$gomod" |
  grep -v -e '^k8s.io/sample-cli-plugin$' -e '^k8s.io/sample-controller$')
if [ "$(wc -l <<<"$replaces")" -lt 20 ]; then
  echo "install-k8s: k8s.io/kubernetes v$VERSION's go.mod has an unexpected replace block" >&2
  exit 1
fi

{
  echo "module k8sbin"
  echo
  echo "go 1.26"
  echo
  echo "require k8s.io/kubernetes v$VERSION"
  echo
  while read -r m; do echo "replace $m => $m $STAGING"; done <<<"$replaces"
} >go.mod

cat >tools.go <<'EOF'
//go:build tools

// Package k8sbin pins the control-plane commands this module builds.
package k8sbin

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF

echo "install-k8s: resolving modules" >&2
GOFLAGS=-buildvcs=false GO111MODULE=on go mod tidy -e >&2

echo "install-k8s: building ${BINS[*]} (about 6 min on 2 cores, ~2.9 GB RAM)" >&2
mkdir out
GOFLAGS="-mod=mod -buildvcs=false" GO111MODULE=on CGO_ENABLED=0 nice -n 10 \
  go build -trimpath -o out/ \
  -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$VERSION -X k8s.io/component-base/version.gitTreeState=clean" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl

out/kube-apiserver --version >&2
# Atomic install: build beside the cache, then rename the directory, so a
# crash leaves no half set.
tmp=$(mktemp -d "$cache/.v$VERSION.XXXXXX")
for b in "${BINS[@]}"; do
  cp "out/$b" "$tmp/$b"
  chmod 0755 "$tmp/$b"
done
sync "$tmp"/* 2>/dev/null || true
chmod 0755 "$tmp"
rm -rf "$dest"
mv "$tmp" "$dest"
echo "$dest"
