// Package supervisor is the process that runs one workspace's VM: the
// start command re-executes the microagent binary as it (Command, read back
// by ParseArgs, entered through Main), and it lives as long as the VM. It
// owns the VMM, which dies with it, the guest channel, the secrets of the
// boot (resolved here, in memory only), and serves the workspace's clients
// on run/sup.sock.
//
// Its boot is a list of named steps with one cleanup stack that unwinds
// once on failure (see steps): claim the boot, resolve secrets, read the
// manifest, prepare guest memory, launch the VM, bring a resumed guest up
// to date (restores and forks only), deliver secrets and files, listen,
// record running. Then it serves requests until the VM stops and records
// how it ended.
//
// The socket protocol is declared in api.go (Request, Reply, Status,
// versioned by ProtocolVersion), and Client is its only client; errors
// keep their sentinels across the socket (package errcode). The boot plan
// (Plan, run/boot.json) and the readiness message (Ready, on file
// descriptor 3) are the two other halves of its contract with the start
// command.
package supervisor
