#!/usr/bin/env bash
# Builds the sops CLI (for the README's SOPS helper recipe test) from the Go
# module proxy into a cache outside the repository, only when missing, and
# installs age (Debian package) which sops uses for its keys.
#
# Cache directory (first that applies): $MICROAGENT_SOPS_CACHE,
# $XDG_CACHE_HOME/microagent/sops, /var/cache/microagent/sops (as root),
# $HOME/.cache/microagent/sops. The binary lands at <cache>/bin/sops.
# Cost: ~5 min to compile on 2 cores the first time; ~75 MB.
set -euo pipefail
VERSION="${SOPS_VERSION:-v3.13.3}"
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH=$PATH:/usr/local/go/bin
fi
if [ -n "${MICROAGENT_SOPS_CACHE:-}" ]; then
  cache=$MICROAGENT_SOPS_CACHE
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
  cache=$XDG_CACHE_HOME/microagent/sops
elif [ "$(id -u)" = 0 ]; then
  cache=/var/cache/microagent/sops
else
  cache=$HOME/.cache/microagent/sops
fi
if ! command -v age-keygen >/dev/null; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends age
fi
bin=$cache/bin/sops
# A stamp, not `sops --version`: that command asks GitHub for the latest release.
if [ -x "$bin" ] && [ "$(cat "$cache/bin/VERSION" 2>/dev/null)" = "$VERSION" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && GOBIN="$tmp" go install "github.com/getsops/sops/v3/cmd/sops@$VERSION")
mkdir -p "$cache/bin"
mv -f "$tmp/sops" "$bin"
echo "$VERSION" > "$cache/bin/VERSION"
echo "$bin"
