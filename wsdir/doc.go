// Package wsdir is the on-disk state of workspaces: one folder per
// workspace, <state>/workspaces/<name>/, holding
//
//	manifest.json   what the workspace is (image and digest, resources, secret
//	                and network declarations: references only, never values);
//	                versioned
//	state.json      what it is doing (the Record: state, reason, supervisor and
//	                VMM identity)
//	disk.ext4       the writable disk (the overlay's upper layer)
//	lock            the lifecycle lock (flock), naming its holder
//	state.lock      serialises read-modify-write of state.json (held for microseconds)
//	run/            runtime files of the current boot: sup.sock, qmp.sock, boot.json
//	logs/           supervisor.log (boot and lifecycle events), console.log (serial)
//	files/          files given at create, until the first start puts them in
//	snapshots/      one folder per snapshot (see Snapshot)
//	secrets-audit.log  the secrets audit log, when auditing is on (package audit)
//
// Files are 0600 and folders 0700; manifest.json and state.json are replaced
// atomically (temporary file, fsync, rename). Both the client library
// (package workspace) and the supervisor process (package supervisor) read
// and write a workspace through this package; it knows nothing of VMs.
package wsdir
