//go:build linux

package guest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/internal/testenv"
)

// fakeSys records OpResumed's system calls instead of making them.
type fakeSys struct {
	mu       sync.Mutex
	calls    []string
	clock    int64
	entropy  []byte
	hostname string
	idPath   string
	failOn   string
}

func (f *fakeSys) note(c string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	if c == f.failOn {
		return errors.New("not permitted")
	}
	return nil
}

func (f *fakeSys) setClock(n int64) error { f.clock = n; return f.note("clock") }
func (f *fakeSys) addEntropy(b []byte) error {
	f.entropy = bytes.Clone(b)
	return f.note("entropy")
}
func (f *fakeSys) reseed() error { return f.note("reseed") }
func (f *fakeSys) setHostname(n string) error {
	f.hostname = n
	return f.note("hostname")
}
func (f *fakeSys) writeMachineID(_, id string) (bool, error) {
	if err := f.note("machineid"); err != nil {
		return false, err
	}
	return realSys{}.writeMachineID(f.idPath, id)
}

func TestResumedSetsClockEntropyIdentity(t *testing.T) {
	fs := &fakeSys{idPath: filepath.Join(t.TempDir(), "machine-id")}
	os.WriteFile(fs.idPath, []byte("0123456789abcdef0123456789abcdef\n"), 0o444)
	a := &Agent{reaper: testAgent.reaper, started: time.Now(), sys: fs}
	c := connectAgent(t, a, channel.HelloRequest{Hostname: "source", Env: []string{"PATH=/usr/bin:/bin"}})
	ctx := context.Background()

	// A plain resume: clock and entropy only, filled in by the client.
	before := time.Now().UnixNano()
	if err := c.Resumed(ctx, channel.ResumedRequest{}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(fs.calls, ",") != "clock,entropy,reseed" {
		t.Fatalf("calls %v", fs.calls)
	}
	if fs.clock < before || fs.clock > time.Now().UnixNano() {
		t.Fatalf("clock %d not the host's", fs.clock)
	}
	if len(fs.entropy) != channel.ResumedEntropy || bytes.Equal(fs.entropy, make([]byte, channel.ResumedEntropy)) {
		t.Fatalf("entropy %x", fs.entropy)
	}

	// A fork: a new hostname (which new processes see) and machine id.
	fs.calls = nil
	id := channel.NewMachineID()
	if err := c.Resumed(ctx, channel.ResumedRequest{Hostname: "fork-1", MachineID: id}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(fs.calls, ",") != "clock,entropy,reseed,hostname,machineid" || fs.hostname != "fork-1" {
		t.Fatalf("calls %v hostname %q", fs.calls, fs.hostname)
	}
	if b, _ := os.ReadFile(fs.idPath); string(b) != id+"\n" {
		t.Fatalf("machine id %q, want %q", b, id)
	}
	if fi, _ := os.Stat(fs.idPath); fi.Mode().Perm() != 0o444 {
		t.Fatalf("machine id mode %v", fi.Mode())
	}
	es, out, _ := run(t, c, channel.ExecRequest{Argv: []string{"sh", "-c", "echo $HOSTNAME"}}, nil)
	if es.Code != 0 || out != "fork-1\n" {
		t.Fatalf("HOSTNAME in a new process: %+v %q", es, out)
	}

	// A failed step is reported, and the others are still done.
	fs.calls, fs.failOn = nil, "entropy"
	err := c.Resumed(ctx, channel.ResumedRequest{Hostname: "fork-2"})
	if err == nil || !strings.Contains(err.Error(), "add entropy: not permitted") {
		t.Fatalf("got %v", err)
	}
	if strings.Join(fs.calls, ",") != "clock,entropy,hostname" {
		t.Fatalf("calls after a failure %v", fs.calls)
	}

	// Bad requests are refused before anything changes.
	fs.calls, fs.failOn = nil, ""
	for _, r := range []channel.ResumedRequest{
		{MachineID: "../../etc/passwd"},
		{Entropy: []byte("short")},
		{UnixNano: -5},
	} {
		if err := c.Resumed(ctx, r); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	// The agent checks too (a host is not trusted to have validated).
	raw, err := c.OpenRaw(ctx, channel.Header{Op: channel.OpResumed, Resumed: &channel.ResumedRequest{
		UnixNano: 1, Entropy: make([]byte, channel.ResumedEntropy), MachineID: "not-an-id"}})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var r channel.Reply
	if err := channel.ReadJSON(raw, channel.FrameReply, &r); err != nil || !strings.Contains(r.Error, "machine id") {
		t.Fatalf("agent accepted a bad machine id: %+v %v", r, err)
	}
	if len(fs.calls) != 0 {
		t.Fatalf("a refused request made calls %v", fs.calls)
	}
}

// The machine id is only rewritten where the image has one.
func TestWriteMachineIDOnlyWhenPresent(t *testing.T) {
	p := filepath.Join(t.TempDir(), "machine-id")
	if ok, err := (realSys{}).writeMachineID(p, channel.NewMachineID()); ok || err != nil {
		t.Fatalf("absent file: %v %v", ok, err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("created a machine id the image did not have")
	}
	// A link is kept; the file it names is rewritten.
	target := filepath.Join(t.TempDir(), "real-machine-id")
	os.WriteFile(target, []byte("old\n"), 0o444)
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	id := channel.NewMachineID()
	if ok, err := (realSys{}).writeMachineID(p, id); !ok || err != nil {
		t.Fatalf("through a link: %v %v", ok, err)
	}
	if fi, _ := os.Lstat(p); fi.Mode()&os.ModeSymlink == 0 {
		t.Fatal("the link was replaced by a file")
	}
	if b, _ := os.ReadFile(target); string(b) != id+"\n" {
		t.Fatalf("target holds %q", b)
	}
}

// The real ioctls, on the host's kernel: crediting host entropy and forcing
// a reseed are harmless, and they check the rand_pool_info layout.
func TestRealEntropyIoctls(t *testing.T) {
	testenv.RequireRoot(t, "RNDADDENTROPY needs CAP_SYS_ADMIN")
	b := make([]byte, channel.ResumedEntropy)
	rand.Read(b)
	if err := (realSys{}).addEntropy(b); err != nil {
		t.Fatal(err)
	}
	if err := (realSys{}).reseed(); err != nil {
		t.Fatal(err)
	}
}
