#!/usr/bin/env bash
# Installs the host packages microagent and its tests need, on Debian or
# Ubuntu: QEMU (microvm machine, TCG and KVM), e2fsprogs for writable disks,
# busybox-static for the test and demo images, docker-registry for a real
# registry in the tests, python3-minimal for the spec's python image fixture,
# pass and gnupg for the README's helper recipe test.
# Idempotent.
set -euo pipefail
pkgs=(qemu-system-x86 qemu-utils e2fsprogs busybox-static docker-registry python3-minimal pass gnupg ca-certificates)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH=$PATH:/usr/local/go/bin
fi
command -v go >/dev/null || { echo "Go 1.26 or newer is needed: https://go.dev/doc/install" >&2; exit 1; }
echo "host packages ready: ${pkgs[*]}"
