// Package workspace manages named workspaces: persistent microVMs whose
// writable disk survives between boots. It is the library behind
// "microagent create", "start", "exec", "halt", "kill", "delete", "list",
// "ps", "status", "logs", "wait" and "gc"; the CLI only parses flags and
// prints.
//
// # State
//
// Each workspace is one folder, <state>/workspaces/<name>/, laid out and
// read and written through package wsdir (manifest, record, lock, logs,
// snapshots). A workspace is created in a hidden temporary folder and
// renamed into place only when complete, and deleted by renaming it away
// first, so a crash never leaves a half workspace that List shows.
//
// # Processes
//
// A running workspace has one detached supervisor process (the same binary
// re-executed with the hidden command supervisor.CommandName, in its own session:
// package supervisor).
// It owns QEMU, which dies with it, and the guest channel, and serves the CLI
// on run/sup.sock. Commands may exit at any time; the workspace keeps
// running. Processes are identified by PID and start time (and host boot),
// never by a bare PID, so Status reports the truth after any crash.
//
// # Locking
//
// Lifecycle commands (Create's rename, Start, Halt, Kill, Delete, GC) take
// the workspace's flock without waiting: a second concurrent command gets an
// error wrapping ErrBusy naming the holder. Exec takes no lock: concurrent
// execs on a running workspace are independent.
//
// # Secrets
//
// Create and Start take secret declarations (package secrets); the manifest
// keeps them. Every start's supervisor resolves them (package conduit) in
// the environment it inherits from the start command, before QEMU is
// launched: a secret that cannot be resolved fails the start, names the
// secret and the reason, and leaves the workspace in the state it was in.
// Once the guest is up the values are recorded in the audit log (when on),
// written by the guest to a tmpfs at /run/secrets and zeroed on the host;
// on-demand secrets are resolved afresh at every fetch. Values live only in
// the supervisor's memory, never in a file of the workspace.
package workspace
