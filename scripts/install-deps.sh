#!/usr/bin/env bash
# Installs the host packages microagent and its tests need, on Debian or
# Ubuntu: QEMU (microvm machine, TCG and KVM), e2fsprogs for writable disks,
# busybox-static for the test and demo images, docker-registry for a real
# registry in the tests, passt for the default user network's outbound
# traffic (without it guests fall back to slirp and reach nothing outside),
# python3-minimal for the spec's python image fixture, pass and gnupg for the
# README's helper recipe test, nodejs and npm for the MCP server's test with the
# official TypeScript client (mcpserver, TestNodeClient).
# Idempotent.
set -euo pipefail
pkgs=(qemu-system-x86 qemu-utils e2fsprogs busybox-static docker-registry passt python3-minimal pass gnupg ca-certificates)
# Node and npm from elsewhere (nodesource's nodejs bundles npm and conflicts
# with Debian's) serve as well: Debian's are installed only when neither is
# found.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  pkgs+=(nodejs npm)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
# The guest kernel is fetched with `apt-get download`, which needs package
# lists even when every package above is already installed.
if ((${#missing[@]})) || ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
  $SUDO apt-get update -q
fi
if ((${#missing[@]})); then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH=$PATH:/usr/local/go/bin
fi
command -v go >/dev/null || { echo "Go 1.26 or newer is needed: https://go.dev/doc/install" >&2; exit 1; }
echo "host packages ready: ${pkgs[*]}"
