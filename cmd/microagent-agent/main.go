//go:build linux

// Command microagent-agent is the guest agent: PID 1 inside every microagent
// microVM. It is built static (CGO_ENABLED=0) and placed in the initramfs by
// the host; it is not meant to be run by hand.
package main

import "github.com/microagent-dev/microagent/guest"

func main() { guest.Main() }
