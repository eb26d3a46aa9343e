#!/usr/bin/env bash
# Builds the HashiCorp Vault server binary that the secrets tests start in dev
# mode, into a cache outside the repository, only when it is missing.
#
# Vault's server is built from the Go module proxy as an ordinary dependency of
# a tiny wrapper module (no source edit, no git clone): see DESIGN.md section 7.
# Only v1.19.4 and v1.17.6 are known to compile; later 1.18-1.21 patch releases
# do not compile against any published sdk.
#
# Cache directory (first that applies):
#   $MICROAGENT_VAULT_CACHE
#   $XDG_CACHE_HOME/microagent/vault
#   /var/cache/microagent/vault          (when run as root)
#   $HOME/.cache/microagent/vault
# The binary lands at <cache>/vault-<version>; internal/vaulttest looks there.
#
# Cost: a few minutes of downloads, then ~11 min and ~4.4 GB RAM to compile on
# 2 cores; the binary is ~340 MB. Prints the binary's path on success.
set -euo pipefail

VERSION="${VAULT_VERSION:-1.19.4}"

if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH=$PATH:/usr/local/go/bin
fi
command -v go >/dev/null || { echo "install-vault: Go is needed: https://go.dev/doc/install" >&2; exit 1; }

if [ -n "${MICROAGENT_VAULT_CACHE:-}" ]; then
  cache=$MICROAGENT_VAULT_CACHE
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
  cache=$XDG_CACHE_HOME/microagent/vault
elif [ "$(id -u)" = 0 ]; then
  cache=/var/cache/microagent/vault
else
  cache=$HOME/.cache/microagent/vault
fi
bin=$cache/vault-$VERSION

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p -m 0700 "$cache"
# One build at a time: a second caller waits, then finds the binary.
exec 9>"$cache/.lock"
flock 9
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vaultbin.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

echo "install-vault: fetching github.com/hashicorp/vault@v$VERSION" >&2
# Vault's own go.sum is the wrapper's starting go.sum: the checksum database
# has no entry for two plugin versions Vault pins, but the proxy serves them
# with the hashes Vault recorded.
dir=$(GO111MODULE=on GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/vault@v$VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -f "$dir/go.sum" ]; then
  echo "install-vault: could not locate Vault v$VERSION's go.sum in the module cache (dir=\"$dir\")" >&2
  exit 1
fi
cp "$dir/go.sum" go.sum
chmod 0644 go.sum

cat >go.mod <<EOF
module vaultbin

go 1.24.0

require github.com/hashicorp/vault v$VERSION

replace github.com/99designs/keyring => github.com/Jeffail/keyring v1.2.3

replace github.com/ma314smith/signedxml v1.1.1 => github.com/moov-io/signedxml v1.1.1
EOF

cat >main.go <<'EOF'
// Command vault is HashiCorp Vault's CLI and server, built unmodified.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() { os.Exit(command.Run(os.Args[1:])) }
EOF

echo "install-vault: building (about 11 min on 2 cores, ~4.4 GB RAM)" >&2
# -mod=mod lets the build add the replaced modules' sums; never "go mod tidy":
# it drags dozens of modules far past Vault's pins and the build breaks.
GOFLAGS="-mod=mod -buildvcs=false" GO111MODULE=on nice -n 10 \
  go build -trimpath -ldflags=-s -o "$work/vault" .

"$work/vault" version >&2
# Atomic install: same directory, then rename, so a crash leaves no half binary.
tmp=$(mktemp "$cache/.vault-$VERSION.XXXXXX")
cp "$work/vault" "$tmp"
chmod 0755 "$tmp"
sync "$tmp" 2>/dev/null || true
mv -f "$tmp" "$bin"
echo "$bin"
