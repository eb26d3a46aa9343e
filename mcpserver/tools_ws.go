package mcpserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/vmm/usernet"
	"github.com/microagent-dev/microagent/workspace"
)

// Output bounds, stated in the tools' descriptions.
const (
	defaultExecOutput = 64 << 10
	maxExecOutput     = 1 << 20
	defaultExecSecs   = 300
	maxExecSecs       = 3600
	maxStdin          = 1 << 20
	defaultLogBytes   = 32 << 10
	maxLogBytes       = 1 << 20
	defaultEgressN    = 100
	maxEgressN        = 2000
	// maxEgressLine bounds one line of the egress log: the helper writes
	// lines of a few hundred bytes, and anything longer is not its.
	maxEgressLine = 64 << 10
	// progressEvery is how often a long call reports that it is still
	// going.
	progressEvery = 2 * time.Second
)

// WorkspaceOut is a workspace as the tools report it.
type WorkspaceOut struct {
	Name            string     `json:"name"`
	State           string     `json:"state" jsonschema:"created, starting, running, paused, halting, halted or failed"`
	Reason          string     `json:"reason,omitempty" jsonschema:"why it failed, or how it halted"`
	Image           string     `json:"image"`
	Digest          string     `json:"digest"`
	Profile         string     `json:"profile,omitempty"`
	MemoryMiB       int        `json:"memory_mib"`
	CPUs            int        `json:"cpus"`
	DiskBytes       int64      `json:"disk_bytes"`
	DiskUsedBytes   int64      `json:"disk_used_bytes"`
	Created         string     `json:"created"`
	Started         string     `json:"started,omitempty"`
	BootSeconds     float64    `json:"boot_seconds,omitempty"`
	CreatedBy       string     `json:"created_by,omitempty"`
	Network         NetworkOut `json:"network"`
	Secrets         []string   `json:"secrets,omitempty" jsonschema:"names of the secrets the operator's policy gave it (never values)"`
	RunningCommands int        `json:"running_commands,omitempty"`
}

// NetworkOut is a workspace's network.
type NetworkOut struct {
	Mode       string   `json:"mode" jsonschema:"user (NAT) or isolated (no network device)"`
	Egress     string   `json:"egress" jsonschema:"all, none, or allowlist (only the names in allow)"`
	Allow      []string `json:"allow,omitempty"`
	AllowCIDRs []string `json:"allow_cidrs,omitempty"`
	HostAccess bool     `json:"host_access,omitempty"`
	Ports      []string `json:"ports,omitempty"`
}

func workspaceOut(inf *workspace.Info) WorkspaceOut {
	o := WorkspaceOut{
		Name: inf.Name, State: string(inf.State), Reason: inf.Reason, Image: inf.Image, Digest: inf.Digest,
		Profile: inf.Profile, MemoryMiB: inf.Resources.MemoryMiB, CPUs: inf.Resources.CPUs,
		DiskBytes: inf.Resources.DiskBytes, DiskUsedBytes: inf.DiskUsedBytes,
		Created: inf.Created.Format(time.RFC3339), BootSeconds: inf.BootSeconds, CreatedBy: inf.CreatedBy,
		RunningCommands: inf.Execs,
	}
	if !inf.Started.IsZero() {
		o.Started = inf.Started.Format(time.RFC3339)
	}
	if n := inf.Network; n != nil {
		o.Network = NetworkOut{Mode: string(n.Mode), Egress: "all", Allow: n.AllowNames, HostAccess: n.HostAccess}
		switch {
		case n.EgressNone:
			o.Network.Egress = "none"
		case len(n.AllowNames) > 0:
			o.Network.Egress = "allowlist"
		}
		for _, c := range n.AllowCIDRs {
			o.Network.AllowCIDRs = append(o.Network.AllowCIDRs, c.String())
		}
		for _, p := range n.Publish {
			o.Network.Ports = append(o.Network.Ports, p.String())
		}
	}
	if o.Network.Mode == "" {
		o.Network.Mode = "user"
	}
	if inf.Secrets != nil {
		for _, d := range inf.Secrets.Secrets {
			o.Secrets = append(o.Secrets, d.Name)
		}
	}
	return o
}

// NameIn names one workspace.
type NameIn struct {
	Name string `json:"name" jsonschema:"the workspace's name"`
}

// CreateIn is workspace_create's input.
type CreateIn struct {
	Name      string `json:"name" jsonschema:"the new workspace's name: 1-64 letters, digits, '_', '.', '-'"`
	Image     string `json:"image" jsonschema:"OCI image reference, e.g. docker.io/library/alpine:3.20 (the policy may limit which)"`
	Profile   string `json:"profile,omitempty" jsonschema:"size: tiny (128 MiB, 1 CPU) or small (256 MiB, 1 CPU) by default; the policy may allow medium and large"`
	MemoryMiB int    `json:"memory_mib,omitempty" jsonschema:"memory in MiB, instead of the profile's (capped by the policy)"`
	CPUs      int    `json:"cpus,omitempty" jsonschema:"virtual CPUs, instead of the profile's (capped by the policy)"`
	DiskMiB   int    `json:"disk_mib,omitempty" jsonschema:"writable disk size in MiB, instead of the profile's (capped by the policy)"`
	Start     bool   `json:"start,omitempty" jsonschema:"boot it at once, as workspace_start does"`
}

// ListOut is workspace_list's output.
type ListOut struct {
	Workspaces []WorkspaceOut `json:"workspaces"`
	// Max is the policy's max_workspaces.
	Max int `json:"max_workspaces"`
}

// ExecIn is workspace_exec's input.
type ExecIn struct {
	Name           string            `json:"name" jsonschema:"the workspace (running)"`
	Argv           []string          `json:"argv,omitempty" jsonschema:"the command and its arguments, run as given without a shell; give argv or command"`
	Command        string            `json:"command,omitempty" jsonschema:"a shell command line, run as /bin/sh -c COMMAND; give argv or command"`
	Cwd            string            `json:"cwd,omitempty" jsonschema:"absolute working directory (default: the image's)"`
	Env            map[string]string `json:"env,omitempty" jsonschema:"environment variables over the image's"`
	User           string            `json:"user,omitempty" jsonschema:"user to run as (default: the image's)"`
	Stdin          string            `json:"stdin,omitempty" jsonschema:"text given to the command on stdin (at most 1 MiB; default: none)"`
	TimeoutSeconds float64           `json:"timeout_seconds,omitempty" jsonschema:"kill the command after this long (default 300, at most 3600); timed_out is then true and exit_code 124"`
	MaxOutputBytes int               `json:"max_output_bytes,omitempty" jsonschema:"keep at most this many bytes of stdout and of stderr each (default 65536, at most 1048576); the rest is counted, not kept"`
}

// ExecOut is workspace_exec's output.
type ExecOut struct {
	ExitCode        int    `json:"exit_code" jsonschema:"the command's exit code; 128+N when killed by signal N; 124 on timeout; 126/127 when it could not be started"`
	Signal          int    `json:"signal,omitempty"`
	TimedOut        bool   `json:"timed_out"`
	Error           string `json:"error,omitempty" jsonschema:"why the command could not be started"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	Encoding        string `json:"encoding" jsonschema:"utf-8, or base64 when the output was not valid UTF-8 (then stdout and stderr are base64)"`
	StdoutBytes     int64  `json:"stdout_bytes" jsonschema:"how many bytes the command wrote to stdout in all"`
	StderrBytes     int64  `json:"stderr_bytes"`
	StdoutTruncated bool   `json:"stdout_truncated" jsonschema:"stdout was longer than max_output_bytes: only its beginning is here"`
	StderrTruncated bool   `json:"stderr_truncated"`
}

// HaltIn is workspace_halt's input.
type HaltIn struct {
	Name           string  `json:"name"`
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty" jsonschema:"graceful power-off time before it is forced (default 30)"`
}

// DeleteIn is workspace_delete's input.
type DeleteIn struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty" jsonschema:"kill it first if it is running (otherwise a running workspace is refused)"`
}

// DeleteOut reports a deletion.
type DeleteOut struct {
	Deleted string `json:"deleted"`
}

// LogsIn is workspace_logs's input.
type LogsIn struct {
	Name     string `json:"name"`
	Source   string `json:"source,omitempty" jsonschema:"console (the guest's serial console), supervisor (boots, halts, failures) or both (default)"`
	MaxBytes int    `json:"max_bytes,omitempty" jsonschema:"return at most the last this many bytes (default 32768, at most 1048576)"`
}

// LogsOut is workspace_logs's output.
type LogsOut struct {
	Log       string `json:"log" jsonschema:"the log's end, invalid UTF-8 replaced"`
	Bytes     int64  `json:"bytes" jsonschema:"the log's whole size"`
	Truncated bool   `json:"truncated" jsonschema:"only the end of the log is here"`
}

// SnapshotIn is snapshot_create's input.
type SnapshotIn struct {
	Name string `json:"name" jsonschema:"the workspace (running or paused)"`
	Tag  string `json:"tag,omitempty" jsonschema:"the snapshot's tag: 1-64 letters, digits, '_', '.', '-' (default: the UTC time, YYYYMMDD-HHMMSS)"`
}

// SnapshotOut is one snapshot.
type SnapshotOut struct {
	Workspace string `json:"workspace"`
	Tag       string `json:"tag"`
	Created   string `json:"created"`
	SizeBytes int64  `json:"size_bytes"`
	MemoryMiB int    `json:"memory_mib"`
	Paused    bool   `json:"paused,omitempty" jsonschema:"the workspace was paused when captured"`
}

// SnapshotsOut is snapshot_list's output.
type SnapshotsOut struct {
	Snapshots []SnapshotOut `json:"snapshots"`
}

// ForkIn is workspace_fork's input.
type ForkIn struct {
	Name string `json:"name" jsonschema:"the new workspace's name"`
	From string `json:"from" jsonschema:"the snapshot to fork, as WORKSPACE:TAG"`
}

// RestoreIn is workspace_restore's input.
type RestoreIn struct {
	Name string `json:"name" jsonschema:"the workspace (halted: halt it first)"`
	Tag  string `json:"tag" jsonschema:"its snapshot to roll back to"`
}

// SnapshotRefIn is snapshot_delete's input.
type SnapshotRefIn struct {
	Name string `json:"name" jsonschema:"the workspace"`
	Tag  string `json:"tag" jsonschema:"the snapshot to delete"`
}

// EgressIn is egress_log's input.
type EgressIn struct {
	Name  string `json:"name"`
	Limit int    `json:"limit,omitempty" jsonschema:"return the last this many decisions (default 100, at most 2000)"`
}

// EgressEvent is one decision of a workspace's network (usernet.Event).
type EgressEvent struct {
	Time     string  `json:"time"`
	Proto    string  `json:"proto" jsonschema:"tcp, udp, dns-udp or dns-tcp"`
	Dst      string  `json:"dst" jsonschema:"the guest's destination address:port"`
	Name     string  `json:"name,omitempty" jsonschema:"the name a DNS query asked for"`
	Verdict  string  `json:"verdict" jsonschema:"allow or deny"`
	Reason   string  `json:"reason"`
	Error    string  `json:"error,omitempty" jsonschema:"why an allowed flow failed on the host"`
	Closed   bool    `json:"closed,omitempty" jsonschema:"the end of an allowed flow, with its byte counts"`
	BytesOut int64   `json:"bytes_out,omitempty"`
	BytesIn  int64   `json:"bytes_in,omitempty"`
	Seconds  float64 `json:"seconds,omitempty"`
}

func egressEvent(ev *usernet.Event) EgressEvent {
	return EgressEvent{
		Time: ev.Time.Format(time.RFC3339Nano), Proto: ev.Proto, Dst: ev.Dst.String(), Name: ev.Name,
		Verdict: ev.Verdict, Reason: ev.Reason, Error: ev.Error, Closed: ev.Closed,
		BytesOut: ev.BytesOut, BytesIn: ev.BytesIn, Seconds: ev.Seconds,
	}
}

// EgressOut is egress_log's output.
type EgressOut struct {
	Events    []EgressEvent `json:"events" jsonschema:"the network's decisions, oldest first"`
	Total     int           `json:"total" jsonschema:"how many decisions the log holds"`
	Truncated bool          `json:"truncated"`
}

func (s *Server) addWorkspaceTools() {
	ro := &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: ptr(false)}
	add := &mcp.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)}
	destroy := &mcp.ToolAnnotations{DestructiveHint: ptr(true), OpenWorldHint: ptr(false)}

	mcp.AddTool(s.srv, &mcp.Tool{Name: "workspace_create", Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(true)},
		Description: "Create a workspace: a Linux microVM booted from an OCI image, with a persistent writable disk. " +
			"The image is pulled if it is not stored (progress is reported). The operator's policy decides the allowed images, " +
			"sizes, the most workspaces at once, the network and the secrets; a refusal names the policy field. " +
			"With start=true it is also booted; otherwise call workspace_start."}, s.create)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "workspace_start", Annotations: add,
		Description: "Boot a workspace (or a fork's first resume) and return once its guest answers. Progress is reported while it boots; " +
			"a cancelled start abandons the boot and leaves the workspace stopped."}, s.start)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "workspace_exec", Annotations: destroy,
		Description: "Run a command in a running workspace and return its exit code, stdout and stderr. " +
			"Output is bounded: at most max_output_bytes (default 64 KiB, at most 1 MiB) of each stream is returned, " +
			"with *_truncated set and the full byte counts; output that is not UTF-8 comes base64-encoded. " +
			"The command is killed after timeout_seconds (default 300, at most 3600); cancelling the call kills it too."}, s.exec)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "workspace_halt", Annotations: destroy,
		Description: "Power a workspace off (its processes stop; the disk is kept): gracefully, forced after timeout_seconds."}, s.halt)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "workspace_delete", Annotations: destroy,
		Description: "Delete a workspace, its disk and its snapshots. A running one is refused unless force is true."}, s.delete)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "workspace_list", Annotations: ro,
		Description: "List the workspaces you may use (those created through this server, unless the policy allows more), with their states."}, s.list)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "workspace_status", Annotations: ro,
		Description: "Show one workspace: state (observed, not just recorded), image, size, network, secrets' names, boot time."}, s.status)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "workspace_logs", Annotations: ro,
		Description: "Return the end of a workspace's logs: the guest console and/or the supervisor's log of boots and failures " +
			"(at most max_bytes, default 32 KiB, at most 1 MiB)."}, s.logs)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "snapshot_create", Annotations: add,
		Description: "Snapshot a running or paused workspace: memory, devices and disk at one moment (progress is reported). " +
			"A running workspace pauses for the capture and then runs on. A workspace keeps at most max_snapshots."}, s.snapshot)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "snapshot_list", Annotations: ro,
		Description: "List a workspace's snapshots, oldest first."}, s.snapshots)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "snapshot_delete", Annotations: destroy,
		Description: "Delete one of a workspace's snapshots (forks made from it keep running) and list those left. " +
			"A workspace keeps at most max_snapshots."}, s.snapshotDelete)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "workspace_fork", Annotations: add,
		Description: "Create a new workspace from a snapshot (from = WORKSPACE:TAG) and start it, resumed from that moment with its own " +
			"hostname, machine id and disk copy. It counts toward max_workspaces. If its first start fails, the fork is deleted."}, s.fork)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "workspace_restore", Annotations: destroy,
		Description: "Roll a halted workspace back to one of its snapshots and start it: memory, devices and disk as they were " +
			"(what changed since is lost). A running workspace is refused: halt it first."}, s.restore)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "egress_log", Annotations: ro,
		Description: "Return a workspace's network decisions: every connection and DNS query the guest tried, allowed or denied and why " +
			"(the last limit, default 100, at most 2000)."}, s.egress)
}

func (s *Server) create(ctx context.Context, req *mcp.CallToolRequest, in CreateIn) (*mcp.CallToolResult, WorkspaceOut, error) {
	if err := workspace.ValidateName(in.Name); err != nil {
		return nil, WorkspaceOut{}, toolError(err)
	}
	if in.Image == "" {
		return nil, WorkspaceOut{}, errors.New("image is required, e.g. docker.io/library/alpine:3.20")
	}
	if err := s.p.checkImage(in.Image); err != nil {
		return nil, WorkspaceOut{}, err
	}
	res, err := s.p.resources(in.Profile, in.MemoryMiB, in.CPUs, in.DiskMiB)
	if err != nil {
		return nil, WorkspaceOut{}, err
	}
	pr := newProgress(ctx, req)
	stop := pr.tick("preparing image "+in.Image, progressEvery)
	inf, err := s.createCounted(ctx, func() (*workspace.Info, error) {
		return workspace.Create(ctx, s.o.Home, workspace.CreateOptions{
			Name: in.Name, Image: in.Image, Pull: s.o.Pull, Profile: in.Profile, MaxImageBytes: int64(s.p.MaxImageMiB) << 20,
			Resources: workspace.Resources{MemoryMiB: res.MemoryMiB, CPUs: res.CPUs, DiskBytes: res.DiskBytes},
			Agent:     s.o.Agent, Progress: pr, Secrets: s.p.decls, SecretsAudit: s.p.SecretsAudit,
			Network: s.p.network, CreatedBy: s.p.CreatedBy(),
		})
	})
	stop()
	if errors.Is(err, image.ErrTooLarge) {
		return nil, WorkspaceOut{}, s.p.refuse("max_image_mib", "%v", err)
	}
	if err != nil {
		return nil, WorkspaceOut{}, toolError(err)
	}
	if in.Start {
		if inf, err = s.boot(ctx, pr, workspace.StartOptions{Name: in.Name}); err != nil {
			return nil, WorkspaceOut{}, fmt.Errorf("created %s, but its start failed (workspace_start tries again, workspace_delete removes it): %w", in.Name, err)
		}
	}
	return nil, workspaceOut(inf), nil
}

// createCounted runs mk (a create or a fork) unless the owner already has
// max_workspaces workspaces.
func (s *Server) createCounted(ctx context.Context, mk func() (*workspace.Info, error)) (*workspace.Info, error) {
	s.createMu.Lock()
	defer s.createMu.Unlock()
	all, err := workspace.List(ctx, s.o.Home)
	if err != nil {
		return nil, err
	}
	n := 0
	for _, inf := range all {
		if inf.CreatedBy == s.p.CreatedBy() {
			n++
		}
	}
	if n >= s.p.MaxWorkspaces {
		return nil, s.p.refuse("max_workspaces", "%d workspaces exist already, at most %d at once: delete one with workspace_delete first", n, s.p.MaxWorkspaces)
	}
	return mk()
}

// boot starts a workspace, reporting progress while it boots.
func (s *Server) boot(ctx context.Context, pr *progress, o workspace.StartOptions) (*workspace.Info, error) {
	o.Executable, o.Agent, o.Progress = s.executable(), s.o.Agent, pr
	stop := pr.tick("booting "+o.Name, progressEvery)
	inf, err := workspace.Start(ctx, s.o.Home, o)
	stop()
	if err != nil {
		return nil, toolError(err)
	}
	pr.say("%s is running (booted in %.1fs)", o.Name, inf.BootSeconds)
	return inf, nil
}

func (s *Server) start(ctx context.Context, req *mcp.CallToolRequest, in NameIn) (*mcp.CallToolResult, WorkspaceOut, error) {
	if _, err := s.visible(ctx, in.Name); err != nil {
		return nil, WorkspaceOut{}, toolError(err)
	}
	inf, err := s.boot(ctx, newProgress(ctx, req), workspace.StartOptions{Name: in.Name})
	if err != nil {
		return nil, WorkspaceOut{}, err
	}
	return nil, workspaceOut(inf), nil
}

func (s *Server) exec(ctx context.Context, _ *mcp.CallToolRequest, in ExecIn) (*mcp.CallToolResult, ExecOut, error) {
	var out ExecOut
	if _, err := s.visible(ctx, in.Name); err != nil {
		return nil, out, toolError(err)
	}
	argv := in.Argv
	switch {
	case len(argv) > 0 && in.Command != "":
		return nil, out, errors.New("give argv or command, not both")
	case in.Command != "":
		argv = []string{"/bin/sh", "-c", in.Command}
	case len(argv) == 0:
		return nil, out, errors.New("give the command as argv (a list) or command (a shell line)")
	}
	if in.Cwd != "" && !strings.HasPrefix(in.Cwd, "/") {
		return nil, out, fmt.Errorf("cwd %q: give an absolute path", in.Cwd)
	}
	if len(in.Stdin) > maxStdin {
		return nil, out, fmt.Errorf("stdin is %d bytes, at most %d: write the data with file_write and redirect from it", len(in.Stdin), maxStdin)
	}
	secs := in.TimeoutSeconds
	switch {
	case secs < 0 || secs > maxExecSecs:
		return nil, out, fmt.Errorf("timeout_seconds %g: give 1 to %d", secs, maxExecSecs)
	case secs == 0:
		secs = defaultExecSecs
	}
	limit, err := bound("max_output_bytes", in.MaxOutputBytes, defaultExecOutput, maxExecOutput)
	if err != nil {
		return nil, out, err
	}
	var env []string
	for k, v := range in.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, out, fmt.Errorf("env: %q is not a variable name", k)
		}
		env = append(env, k+"="+v)
	}
	stdout, stderr := &capWriter{max: limit}, &capWriter{max: limit}
	o := workspace.ExecOptions{
		Name: in.Name, Argv: argv, Env: env, Cwd: in.Cwd, User: in.User,
		Timeout: time.Duration(secs * float64(time.Second)), Stdout: stdout, Stderr: stderr,
	}
	if in.Stdin != "" {
		o.Stdin = strings.NewReader(in.Stdin)
	}
	// A cancelled call ends ctx: Exec closes the stream and the guest kills
	// the command's process group.
	es, err := workspace.Exec(ctx, s.o.Home, o)
	if err != nil {
		return nil, out, toolError(err)
	}
	out = ExecOut{
		ExitCode: es.Code, Signal: es.Signal, TimedOut: es.TimedOut, Error: es.Error, Encoding: "utf-8",
		StdoutBytes: stdout.n, StderrBytes: stderr.n, StdoutTruncated: stdout.n > int64(limit), StderrTruncated: stderr.n > int64(limit),
	}
	if utf8.Valid(stdout.b) && utf8.Valid(stderr.b) {
		out.Stdout, out.Stderr = string(stdout.b), string(stderr.b)
	} else {
		out.Encoding = "base64"
		out.Stdout, out.Stderr = b64(stdout.b), b64(stderr.b)
	}
	return nil, out, nil
}

// bound checks an optional size argument.
func bound(field string, v, def, max int) (int, error) {
	switch {
	case v == 0:
		return def, nil
	case v < 0 || v > max:
		return 0, fmt.Errorf("%s %d: give 1 to %d", field, v, max)
	}
	return v, nil
}

// capWriter keeps the first max bytes written to it and counts the rest.
type capWriter struct {
	b   []byte
	n   int64
	max int
}

func (w *capWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	if room := w.max - len(w.b); room > 0 {
		w.b = append(w.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (s *Server) halt(ctx context.Context, _ *mcp.CallToolRequest, in HaltIn) (*mcp.CallToolResult, WorkspaceOut, error) {
	if _, err := s.visible(ctx, in.Name); err != nil {
		return nil, WorkspaceOut{}, toolError(err)
	}
	if in.TimeoutSeconds < 0 || in.TimeoutSeconds > 600 {
		return nil, WorkspaceOut{}, fmt.Errorf("timeout_seconds %g: give 1 to 600", in.TimeoutSeconds)
	}
	// A halt half done is worse than one finished: it is not cut short by
	// the call's cancellation.
	inf, err := workspace.Halt(context.WithoutCancel(ctx), s.o.Home, workspace.HaltOptions{Name: in.Name, Timeout: time.Duration(in.TimeoutSeconds * float64(time.Second))})
	if err != nil {
		return nil, WorkspaceOut{}, toolError(err)
	}
	return nil, workspaceOut(inf), nil
}

func (s *Server) delete(ctx context.Context, _ *mcp.CallToolRequest, in DeleteIn) (*mcp.CallToolResult, DeleteOut, error) {
	if _, err := s.visible(ctx, in.Name); err != nil {
		return nil, DeleteOut{}, toolError(err)
	}
	if err := workspace.Delete(context.WithoutCancel(ctx), s.o.Home, workspace.DeleteOptions{Name: in.Name, Force: in.Force}); err != nil {
		if errors.Is(err, workspace.ErrRunning) {
			return nil, DeleteOut{}, fmt.Errorf("%w (halt it with workspace_halt first, or pass force: true)", err)
		}
		return nil, DeleteOut{}, toolError(err)
	}
	return nil, DeleteOut{Deleted: in.Name}, nil
}

func (s *Server) list(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, ListOut, error) {
	all, err := workspace.List(ctx, s.o.Home)
	if err != nil {
		return nil, ListOut{}, err
	}
	out := ListOut{Workspaces: []WorkspaceOut{}, Max: s.p.MaxWorkspaces}
	for _, inf := range all {
		if s.mine(inf) {
			out.Workspaces = append(out.Workspaces, workspaceOut(inf))
		}
	}
	return nil, out, nil
}

func (s *Server) status(ctx context.Context, _ *mcp.CallToolRequest, in NameIn) (*mcp.CallToolResult, WorkspaceOut, error) {
	inf, err := s.visible(ctx, in.Name)
	if err != nil {
		return nil, WorkspaceOut{}, toolError(err)
	}
	return nil, workspaceOut(inf), nil
}

func (s *Server) logs(ctx context.Context, _ *mcp.CallToolRequest, in LogsIn) (*mcp.CallToolResult, LogsOut, error) {
	if _, err := s.visible(ctx, in.Name); err != nil {
		return nil, LogsOut{}, toolError(err)
	}
	limit, err := bound("max_bytes", in.MaxBytes, defaultLogBytes, maxLogBytes)
	if err != nil {
		return nil, LogsOut{}, err
	}
	o := workspace.LogsOptions{Name: in.Name}
	switch in.Source {
	case "", "both":
	case "console":
		o.Console = true
	case "supervisor":
		o.Supervisor = true
	default:
		return nil, LogsOut{}, fmt.Errorf("source %q: use console, supervisor or both", in.Source)
	}
	t := &tailWriter{max: limit}
	if err := workspace.Logs(ctx, s.o.Home, o, t); err != nil {
		return nil, LogsOut{}, toolError(err)
	}
	return nil, LogsOut{Log: strings.ToValidUTF8(string(t.b), "\uFFFD"), Bytes: t.n, Truncated: t.n > int64(limit)}, nil
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	b   []byte
	n   int64
	max int
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	if len(p) >= w.max {
		w.b = append(w.b[:0], p[len(p)-w.max:]...)
		return len(p), nil
	}
	if over := len(w.b) + len(p) - w.max; over > 0 {
		w.b = append(w.b[:0], w.b[over:]...)
	}
	w.b = append(w.b, p...)
	return len(p), nil
}

func snapshotOut(sn *workspace.Snapshot) SnapshotOut {
	return SnapshotOut{Workspace: sn.Workspace, Tag: sn.Tag, Created: sn.Created.Format(time.RFC3339), SizeBytes: sn.SizeBytes, MemoryMiB: sn.MemoryMiB, Paused: sn.Paused}
}

func (s *Server) snapshot(ctx context.Context, req *mcp.CallToolRequest, in SnapshotIn) (*mcp.CallToolResult, SnapshotOut, error) {
	if _, err := s.visible(ctx, in.Name); err != nil {
		return nil, SnapshotOut{}, toolError(err)
	}
	if in.Tag != "" {
		if err := workspace.ValidateTag(in.Tag); err != nil {
			return nil, SnapshotOut{}, toolError(err)
		}
	}
	// One capture at a time per server, so two calls cannot both pass
	// max_snapshots.
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	have, err := workspace.ListSnapshots(s.o.Home, in.Name)
	if err != nil {
		return nil, SnapshotOut{}, toolError(err)
	}
	if len(have) >= s.p.MaxSnapshots {
		return nil, SnapshotOut{}, toolError(s.p.refuse("max_snapshots", "workspace %s keeps %d snapshots, at most %d: delete one with snapshot_delete first", in.Name, len(have), s.p.MaxSnapshots))
	}
	stop := newProgress(ctx, req).tick("capturing a snapshot of "+in.Name, progressEvery)
	sn, err := workspace.CreateSnapshot(ctx, s.o.Home, workspace.SnapshotOptions{Name: in.Name, Tag: in.Tag})
	stop()
	if err != nil {
		return nil, SnapshotOut{}, toolError(err)
	}
	return nil, snapshotOut(sn), nil
}

func (s *Server) snapshotDelete(ctx context.Context, _ *mcp.CallToolRequest, in SnapshotRefIn) (*mcp.CallToolResult, SnapshotsOut, error) {
	if _, err := s.visible(ctx, in.Name); err != nil {
		return nil, SnapshotsOut{}, toolError(err)
	}
	if err := workspace.ValidateTag(in.Tag); err != nil {
		return nil, SnapshotsOut{}, toolError(err)
	}
	if err := workspace.DeleteSnapshot(s.o.Home, in.Name, in.Tag); err != nil {
		return nil, SnapshotsOut{}, toolError(err)
	}
	return s.snapshots(ctx, nil, NameIn{Name: in.Name})
}

func (s *Server) snapshots(ctx context.Context, _ *mcp.CallToolRequest, in NameIn) (*mcp.CallToolResult, SnapshotsOut, error) {
	if _, err := s.visible(ctx, in.Name); err != nil {
		return nil, SnapshotsOut{}, toolError(err)
	}
	list, err := workspace.ListSnapshots(s.o.Home, in.Name)
	if err != nil {
		return nil, SnapshotsOut{}, toolError(err)
	}
	out := SnapshotsOut{Snapshots: []SnapshotOut{}}
	for _, sn := range list {
		out.Snapshots = append(out.Snapshots, snapshotOut(sn))
	}
	return nil, out, nil
}

func (s *Server) fork(ctx context.Context, req *mcp.CallToolRequest, in ForkIn) (*mcp.CallToolResult, WorkspaceOut, error) {
	src, tag, err := workspace.ParseSnapshotRef(in.From)
	if err != nil {
		return nil, WorkspaceOut{}, toolError(err)
	}
	if err := workspace.ValidateName(in.Name); err != nil {
		return nil, WorkspaceOut{}, toolError(err)
	}
	sinf, err := s.visible(ctx, src)
	if err != nil {
		return nil, WorkspaceOut{}, toolError(err)
	}
	// The fork gets the source's image and size: they must still pass the
	// policy, which may have changed since the source was made.
	if err := s.p.checkImage(sinf.Image); err != nil {
		return nil, WorkspaceOut{}, err
	}
	if _, err := s.p.resources(sinf.Profile, sinf.Resources.MemoryMiB, sinf.Resources.CPUs, int(sinf.Resources.DiskBytes>>20)); err != nil {
		return nil, WorkspaceOut{}, err
	}
	// A fork keeps its source's network and secrets: they must be the
	// ones this policy gives, or an older workspace would hand the agent
	// an egress or secrets the operator has since taken away.
	if err := s.p.checkInherited(sinf); err != nil {
		return nil, WorkspaceOut{}, err
	}
	_, err = s.createCounted(ctx, func() (*workspace.Info, error) {
		return workspace.Fork(ctx, s.o.Home, workspace.ForkOptions{Name: in.Name, Source: src, Tag: tag, CreatedBy: s.p.CreatedBy()})
	})
	if err != nil {
		return nil, WorkspaceOut{}, toolError(err)
	}
	inf, err := s.boot(ctx, newProgress(ctx, req), workspace.StartOptions{Name: in.Name})
	if err != nil {
		// Nothing half-made: a fork that does not run is removed.
		if derr := workspace.Delete(context.WithoutCancel(ctx), s.o.Home, workspace.DeleteOptions{Name: in.Name, Force: true}); derr != nil {
			err = fmt.Errorf("%w (and the fork could not be deleted: %v)", err, derr)
		}
		return nil, WorkspaceOut{}, err
	}
	return nil, workspaceOut(inf), nil
}

func (s *Server) restore(ctx context.Context, req *mcp.CallToolRequest, in RestoreIn) (*mcp.CallToolResult, WorkspaceOut, error) {
	inf, err := s.visible(ctx, in.Name)
	if err != nil {
		return nil, WorkspaceOut{}, toolError(err)
	}
	if err := workspace.ValidateTag(in.Tag); err != nil {
		return nil, WorkspaceOut{}, toolError(err)
	}
	if inf.State.Live() {
		return nil, WorkspaceOut{}, fmt.Errorf("workspace %s is %s: halt it with workspace_halt first (a restore replaces its memory and disk)", in.Name, inf.State)
	}
	inf, err = s.boot(ctx, newProgress(ctx, req), workspace.StartOptions{Name: in.Name, FromSnapshot: in.Tag})
	if err != nil {
		return nil, WorkspaceOut{}, err
	}
	return nil, workspaceOut(inf), nil
}

func (s *Server) egress(ctx context.Context, _ *mcp.CallToolRequest, in EgressIn) (*mcp.CallToolResult, EgressOut, error) {
	if _, err := s.visible(ctx, in.Name); err != nil {
		return nil, EgressOut{}, toolError(err)
	}
	limit, err := bound("limit", in.Limit, defaultEgressN, maxEgressN)
	if err != nil {
		return nil, EgressOut{}, err
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := workspace.Logs(ctx, s.o.Home, workspace.LogsOptions{Name: in.Name, Egress: true}, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	out := EgressOut{Events: []EgressEvent{}}
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 4096), maxEgressLine)
	var ring []EgressEvent
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		var ev usernet.Event
		// A torn line (a crash mid-write) is not a decision: skipped.
		if len(line) == 0 || json.Unmarshal(line, &ev) != nil {
			continue
		}
		out.Total++
		ring = append(ring, egressEvent(&ev))
		if len(ring) > limit {
			ring = ring[1:]
		}
	}
	scanErr := sc.Err()
	pr.CloseWithError(errors.New("egress log read"))
	if err := <-done; err != nil && scanErr == nil {
		return nil, EgressOut{}, toolError(err)
	}
	if scanErr != nil {
		return nil, EgressOut{}, fmt.Errorf("egress log of %s: %v", in.Name, scanErr)
	}
	out.Events = append(out.Events, ring...)
	out.Truncated = out.Total > len(ring)
	return nil, out, nil
}
