#!/usr/bin/env bash
# The README's first run: install the guest kernel, build a busybox image
# locally (no registry needed), load it, and run a command in a microVM.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
bin=./bin/microagent
$bin doctor || true
$bin kernel install
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go run ./internal/cmd/busybox-image -o "$tmp/busybox.tar" -tag localhost/busybox:latest
$bin image load "$tmp/busybox.tar"
echo "+ microagent run localhost/busybox:latest sh -c 'echo hello from \$(uname -r) in a microVM; id'"
time $bin run localhost/busybox:latest sh -c 'echo hello from $(uname -r) in a microVM; id'
