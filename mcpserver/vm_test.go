package mcpserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/testenv/vmenv"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/workspace"

	// The supervisor this test binary runs boots VMs through the backend
	// the manifest names, as cmd/microagent's does.
	_ "github.com/microagent-dev/microagent/vmm/qemu"
)

// TestMain is also the supervisor's entry point: workspace_start runs
// this test binary (Options.Executable) as the supervisor, as the
// workspace package's tests do.
func TestMain(m *testing.M) {
	if _, ok := supervisor.ParseArgs(os.Args); ok {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := supervisor.Main(ctx, os.Args, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintf(os.Stderr, "microagent: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type vmEnv struct {
	h     home.Home
	ref   string
	exe   string
	agent string
}

func vmSetup(t *testing.T) *vmEnv {
	t.Helper()
	h := vmenv.VMHome(t)
	reg := testenv.StartRegistry(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e := &vmEnv{h: h, ref: reg.PushBusybox(t, "busybox"), exe: exe, agent: vmenv.Agent(t)}
	t.Cleanup(func() {
		infos, _ := workspace.List(context.Background(), h)
		for _, i := range infos {
			if i.State.Live() {
				workspace.Kill(context.Background(), h, i.Name)
			}
		}
		workspace.GC(context.Background(), h)
		assertNoProcs(t, h)
	})
	return e
}

// assertNoProcs checks that no process (QEMU, supervisor) of the state
// directory runs.
func assertNoProcs(t *testing.T, h home.Home) {
	t.Helper()
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(h.Root)) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join(filepath.Dir(p), "stat")); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
				continue
			}
		}
		t.Errorf("process left behind: %s", strings.ReplaceAll(string(b), "\x00", " "))
	}
}

func (e *vmEnv) server(t *testing.T, policy string) *Server {
	t.Helper()
	p, err := ParsePolicy("test.yaml", []byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{Home: e.h, Policy: p, Executable: e.exe, Agent: e.agent})
}

// structured decodes a successful call's structured output into v.
func structured(t *testing.T, cs *mcp.ClientSession, tool string, args, v any) {
	t.Helper()
	res, text := call(t, cs, tool, args)
	if res.IsError {
		t.Fatalf("%s %v: %s", tool, args, text)
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: structured output %s: %v", tool, b, err)
	}
}

// One booted workspace and one fork of it, driven through the protocol:
// create with progress, exec (output, exit codes, bounds), a binary file
// round trip, listing, snapshot, fork, the workspace limit, a workspace
// it did not create, cancellation mid-exec, logs and egress log, delete.
func TestToolsOnVM(t *testing.T) {
	e := vmSetup(t)
	s := e.server(t, "images: [\"127.0.0.1:*/*\"]\nmax_workspaces: 2\nmax_snapshots: 1\n")
	var mu sync.Mutex
	var progressMsgs []string
	cs := connect(t, s, &mcp.ClientOptions{ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
		mu.Lock()
		progressMsgs = append(progressMsgs, r.Params.Message)
		mu.Unlock()
	}})
	ctx := context.Background()

	// A workspace made by the CLI's library, not through the server.
	if _, err := workspace.Create(ctx, e.h, workspace.CreateOptions{Name: "other", Image: e.ref, Agent: e.agent, Profile: "tiny", Resources: workspace.Resources{DiskBytes: 64 << 20}}); err != nil {
		t.Fatal(err)
	}

	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "workspace_create", Meta: mcp.Meta{"progressToken": "create-1"},
		Arguments: map[string]any{"name": "a", "image": e.ref, "profile": "tiny", "disk_mib": 256, "start": true}})
	if err != nil || res.IsError {
		t.Fatalf("create: %v %s", err, resultText(res))
	}
	// The last notification may be handled after the result: wait for it
	// (bounded).
	var got string
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		got = strings.Join(progressMsgs, " | ")
		mu.Unlock()
		if strings.Contains(got, "a is running") || time.Now().After(end) {
			break
		}
	}
	if !strings.Contains(got, "booting a") || !strings.Contains(got, "a is running") {
		t.Errorf("progress of create+start: %q", got)
	}

	var st WorkspaceOut
	structured(t, cs, "workspace_status", map[string]any{"name": "a"}, &st)
	if st.State != "running" || st.CreatedBy != "mcp:default" || st.MemoryMiB != 128 {
		t.Errorf("status: %+v", st)
	}

	var ex ExecOut
	structured(t, cs, "workspace_exec", map[string]any{"name": "a", "command": "echo out; echo err >&2; exit 3"}, &ex)
	if ex.ExitCode != 3 || ex.Stdout != "out\n" || ex.Stderr != "err\n" || ex.Encoding != "utf-8" {
		t.Errorf("exec: %+v", ex)
	}
	structured(t, cs, "workspace_exec", map[string]any{"name": "a", "argv": []string{"cat"}, "stdin": "hello", "env": map[string]string{"X": "1"}}, &ex)
	if ex.ExitCode != 0 || ex.Stdout != "hello" {
		t.Errorf("exec with stdin: %+v", ex)
	}
	structured(t, cs, "workspace_exec", map[string]any{"name": "a", "command": "head -c 5000 /dev/zero | tr '\\0' x", "max_output_bytes": 100}, &ex)
	if !ex.StdoutTruncated || len(ex.Stdout) != 100 || ex.StdoutBytes != 5000 {
		t.Errorf("bounded exec: truncated %v, kept %d, counted %d", ex.StdoutTruncated, len(ex.Stdout), ex.StdoutBytes)
	}
	structured(t, cs, "workspace_exec", map[string]any{"name": "a", "argv": []string{"sleep", "10"}, "timeout_seconds": 1}, &ex)
	if !ex.TimedOut {
		t.Errorf("timeout: %+v", ex)
	}

	// Binary round trip: every byte value.
	blob := make([]byte, 3*256)
	for i := range blob {
		blob[i] = byte(i)
	}
	var wr FileWriteOut
	structured(t, cs, "file_write", map[string]any{"name": "a", "path": "/tmp/new/dir/blob.bin", "content": base64.StdEncoding.EncodeToString(blob), "encoding": "base64", "mode": "0600"}, &wr)
	if wr.Bytes != int64(len(blob)) {
		t.Errorf("write: %+v", wr)
	}
	var rd FileReadOut
	structured(t, cs, "file_read", map[string]any{"name": "a", "path": "/tmp/new/dir/blob.bin"}, &rd)
	back, _ := base64.StdEncoding.DecodeString(rd.Content)
	if rd.Encoding != "base64" || !bytes.Equal(back, blob) || !rd.EOF || rd.Mode != "0600" || rd.Size != int64(len(blob)) {
		t.Errorf("read back: %+v (%d bytes)", rd, len(back))
	}
	structured(t, cs, "file_read", map[string]any{"name": "a", "path": "/tmp/new/dir/blob.bin", "offset": 256, "limit": 10, "encoding": "base64"}, &rd)
	back, _ = base64.StdEncoding.DecodeString(rd.Content)
	if !bytes.Equal(back, blob[256:266]) || rd.EOF || !rd.Truncated {
		t.Errorf("ranged read: %+v", rd)
	}
	structured(t, cs, "file_write", map[string]any{"name": "a", "path": "/tmp/new/note.txt", "content": "héllo\n"}, &wr)
	structured(t, cs, "file_read", map[string]any{"name": "a", "path": "/tmp/new/note.txt"}, &rd)
	if rd.Encoding != "utf-8" || rd.Content != "héllo\n" {
		t.Errorf("text read: %+v", rd)
	}
	var ls FileListOut
	structured(t, cs, "file_list", map[string]any{"name": "a", "path": "/tmp/new"}, &ls)
	types := map[string]string{}
	for _, en := range ls.Entries {
		types[en.Name] = en.Type
	}
	if len(ls.Entries) != 2 || types["dir"] != "dir" || types["note.txt"] != "file" {
		t.Errorf("list: %+v", ls.Entries)
	}
	if r, text := call(t, cs, "file_read", map[string]any{"name": "a", "path": "/tmp/new"}); !r.IsError || !strings.Contains(text, "file_list") {
		t.Errorf("read of a directory: %q", text)
	}

	// A workspace it did not create: unseen, untouchable.
	var list ListOut
	structured(t, cs, "workspace_list", map[string]any{}, &list)
	if len(list.Workspaces) != 1 || list.Workspaces[0].Name != "a" {
		t.Errorf("list: %+v", list)
	}
	wantRefusal(t, cs, "touch_others", "workspace_exec", map[string]any{"name": "other", "argv": []string{"true"}})
	wantRefusal(t, cs, "touch_others", "workspace_delete", map[string]any{"name": "other"})

	// Cancellation mid-exec stops the guest process.
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: "workspace_exec", Arguments: map[string]any{"name": "a", "command": "touch /tmp/started; exec sleep 300"}})
		errc <- err
	}()
	waitFor(t, func() bool {
		_, text := call(t, cs, "workspace_exec", map[string]any{"name": "a", "command": "test -e /tmp/started && echo yes"})
		return strings.Contains(text, "yes")
	})
	cancel()
	if err := <-errc; err == nil {
		t.Error("cancelled exec returned no error")
	}
	waitFor(t, func() bool {
		var out ExecOut
		structured(t, cs, "workspace_exec", map[string]any{"name": "a", "command": "ps | grep -v grep | grep -c 'sleep 300' || true"}, &out)
		return strings.TrimSpace(out.Stdout) == "0"
	})

	var snap SnapshotOut
	structured(t, cs, "snapshot_create", map[string]any{"name": "a", "tag": "base"}, &snap)
	var snaps SnapshotsOut
	structured(t, cs, "snapshot_list", map[string]any{"name": "a"}, &snaps)
	if len(snaps.Snapshots) != 1 || snaps.Snapshots[0].Tag != "base" {
		t.Errorf("snapshots: %+v", snaps)
	}
	var fork WorkspaceOut
	structured(t, cs, "workspace_fork", map[string]any{"name": "b", "from": "a:base"}, &fork)
	if fork.State != "running" || fork.CreatedBy != "mcp:default" {
		t.Errorf("fork: %+v", fork)
	}
	structured(t, cs, "workspace_exec", map[string]any{"name": "b", "argv": []string{"cat", "/tmp/new/note.txt"}}, &ex)
	if ex.Stdout != "héllo\n" {
		t.Errorf("fork's file: %+v", ex)
	}
	// a and b: the limit of 2 is reached.
	wantRefusal(t, cs, "max_workspaces", "workspace_create", map[string]any{"name": "c", "image": e.ref, "profile": "tiny"})
	wantRefusal(t, cs, "max_workspaces", "workspace_fork", map[string]any{"name": "c", "from": "a:base"})
	// One snapshot kept: a second is refused until the first is deleted;
	// the fork made from it runs on.
	wantRefusal(t, cs, "max_snapshots", "snapshot_create", map[string]any{"name": "a", "tag": "more"})
	structured(t, cs, "snapshot_delete", map[string]any{"name": "a", "tag": "base"}, &snaps)
	if len(snaps.Snapshots) != 0 {
		t.Errorf("snapshots after snapshot_delete: %+v", snaps)
	}
	structured(t, cs, "workspace_exec", map[string]any{"name": "b", "argv": []string{"true"}}, &ex)
	if ex.ExitCode != 0 {
		t.Errorf("the fork after its snapshot was deleted: %+v", ex)
	}

	var logs LogsOut
	structured(t, cs, "workspace_logs", map[string]any{"name": "a", "source": "supervisor", "max_bytes": 4096}, &logs)
	if logs.Bytes == 0 || len(logs.Log) > 4096 {
		t.Errorf("logs: %d bytes, %d kept", logs.Bytes, len(logs.Log))
	}
	structured(t, cs, "workspace_exec", map[string]any{"name": "a", "command": "nslookup blocked.invalid 2>&1 || true", "timeout_seconds": 20}, &ex)
	var eg EgressOut
	structured(t, cs, "egress_log", map[string]any{"name": "a"}, &eg)
	t.Logf("egress log: %d decisions", eg.Total)

	for _, n := range []string{"a", "b"} {
		if r, text := call(t, cs, "workspace_delete", map[string]any{"name": n}); !r.IsError || !strings.Contains(text, "force") {
			t.Errorf("delete of running %s: %q", n, text)
		}
		var h WorkspaceOut
		structured(t, cs, "workspace_halt", map[string]any{"name": n}, &h)
		if h.State != "halted" {
			t.Errorf("halt %s: %+v", n, h)
		}
		var d DeleteOut
		structured(t, cs, "workspace_delete", map[string]any{"name": n}, &d)
	}
	structured(t, cs, "workspace_list", map[string]any{}, &list)
	if len(list.Workspaces) != 0 {
		t.Errorf("after delete: %+v", list)
	}
}

func resultText(r *mcp.CallToolResult) string {
	if r == nil {
		return ""
	}
	var out []string
	for _, c := range r.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			out = append(out, tc.Text)
		}
	}
	return strings.Join(out, "\n")
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 60s")
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// An image over max_image_mib is refused by the policy before its layers
// are fetched: no workspace, nothing of it in the store.
func TestImageCap(t *testing.T) {
	e := vmSetup(t)
	reg := testenv.StartRegistry(t)
	layer, err := random.Layer(3<<20, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	big, err := mutate.AppendLayers(testenv.BusyboxImage(t), layer)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.PushImage(t, "big", big)
	cs := connect(t, e.server(t, "images: [\"127.0.0.1:*/*\"]\nmax_image_mib: 2\n"), nil)
	wantRefusal(t, cs, "max_image_mib", "workspace_create", map[string]any{"name": "big", "image": ref, "profile": "tiny"})
	if _, err := workspace.Status(context.Background(), e.h, "big"); !errors.Is(err, workspace.ErrNotFound) {
		t.Errorf("a refused create left a workspace: %v", err)
	}
	store, err := image.OpenStore(e.h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(context.Background(), ref, image.PullNever); !errors.Is(err, image.ErrNotStored) {
		t.Errorf("the refused image is in the store: %v", err)
	}
}
