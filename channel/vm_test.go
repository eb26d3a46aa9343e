package channel_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/initramfs"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/testenv/vmenv"
	"github.com/microagent-dev/microagent/kernel"
	"github.com/microagent-dev/microagent/leakscan"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/rootfs"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

// These tests boot the real agent. They live here, not in package guest,
// because guest's tests run a child reaper in the test process, which
// steals the exit status of the tools (mkfs.ext4, the registry) VM tests
// run.

// ramBackend boots QEMU with guest RAM in a shared file, so a test can read
// the guest's memory as a snapshot would, and with init_on_free=1 as
// workspaces boot.
type ramBackend struct {
	qemu *qemu.Backend
	mem  string
}

func (b ramBackend) Name() string { return "qemu" }

func (b ramBackend) Start(ctx context.Context, cfg vmm.Config) (vmm.Machine, error) {
	cfg.Cmdline = strings.TrimSpace(cfg.Cmdline + " init_on_free=1")
	f, err := os.OpenFile(b.mem, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close() // QEMU has its own descriptor once it answers
	cfg.Memory = &vmm.Memory{File: f, Shared: true}
	return b.qemu.StartWith(ctx, qemu.MachineConfig{Config: cfg})
}

// bootBusybox boots the agent on a busybox image with RAM in a file under
// /dev/shm and returns the VM and that file.
func bootBusybox(t *testing.T) (*microvm.VM, string, string) {
	t.Helper()
	h := vmenv.VMHome(t)
	reg := testenv.StartRegistry(t)
	img := vmenv.PullForTest(t, h, reg.PushBusybox(t, "busybox"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	disk, err := rootfs.Ensure(ctx, h, img)
	if err != nil {
		t.Fatal(err)
	}
	k, err := kernel.Default(h)
	if err != nil {
		t.Fatal(err)
	}
	initrd, err := initramfs.Ensure(h, vmenv.Agent(t), k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rw := filepath.Join(dir, "rw.ext4")
	if err := rootfs.NewWritableDisk(ctx, h, rw, 64<<20); err != nil {
		t.Fatal(err)
	}
	var nb [8]byte
	rand.Read(nb[:])
	mem := "/dev/shm/microagent-guest-test-" + hex.EncodeToString(nb[:])
	t.Cleanup(func() { os.Remove(mem) })
	vm, err := microvm.Boot(ctx, microvm.Options{
		Backend: ramBackend{qemu: qemu.New(qemu.Options{}), mem: mem},
		Kernel:  k.Vmlinux, Initrd: initrd, RootDisk: disk, WritableDisk: rw,
		MemoryMiB: 256, CPUs: 1, RuntimeDir: dir, SerialLog: filepath.Join(dir, "console.log"),
		DieWithParent: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Kill)
	return vm, mem, rw
}

// fetchClient builds testdata/fetchclient (static) and copies it into the
// guest as /tmp/fetch.
func fetchClient(t *testing.T, vm *microvm.VM) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fetch")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./testdata/fetchclient")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the fetch client: %v\n%s", err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errb bytes.Buffer
	es, err := vm.Client.Exec(ctx, channel.ExecRequest{Argv: []string{"sh", "-c", "cat > /tmp/fetch && chmod 755 /tmp/fetch"}, Stdin: true},
		bytes.NewReader(bin), nil, &errb)
	if err != nil || es.Code != 0 {
		t.Fatalf("copy the fetch client in: %+v %v %s", es, err, errb.String())
	}
}

func sh(t *testing.T, vm *microvm.VM, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	es, err := vm.Client.Exec(ctx, channel.ExecRequest{Argv: []string{"sh", "-c", script}}, nil, &out, &errb)
	if err != nil || es.Code != 0 {
		t.Fatalf("%q: %+v %v %s", script, es, err, errb.String())
	}
	return out.String()
}

// describeHits says where copies are, with their surroundings (values
// masked), so a leak can be traced to the kernel or the agent. Seen before
// values were sealed: the agent's yamux receive buffer (Go heap: the
// OpSecrets header JSON, then FrameSecret frames) and page-aligned buffers
// starting with yamux data headers (the guest's virtio-console receive
// pages or the session's bufio buffer), none of which anyone zeroes.
func describeHits(t *testing.T, mem string, hits []leakscan.Hit, lens []int) string {
	f, err := os.Open(mem)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var b strings.Builder
	for i, h := range hits {
		if i == 8 {
			fmt.Fprintf(&b, "... %d more\n", len(hits)-i)
			break
		}
		n := lens[h.Index]
		ctx := make([]byte, 64+n+64)
		start := max(h.Offset-64, 0)
		f.ReadAt(ctx, start)
		for _, o := range hits { // mask every copy, this one included
			for j := o.Offset; j < o.Offset+int64(lens[o.Index]); j++ {
				if j >= start && j < start+int64(len(ctx)) {
					ctx[j-start] = '*'
				}
			}
		}
		pre := ctx[:h.Offset-start]
		post := ctx[h.Offset-start+int64(n):]
		fmt.Fprintf(&b, "value %d at %#x (page %#x+%#x): before %q after %q\n",
			h.Index, h.Offset, h.Offset&^4095, h.Offset&4095, pre, post)
	}
	return b.String()
}

// A delivered value read by a workload and then purged leaves no copy in
// guest RAM: not in the tmpfs, the kernel's freed pages (init_on_free=1),
// nor the agent's heap (values travel sealed; buffers are zeroed).
func TestNoCopyInRAMAfterPurge(t *testing.T) {
	vm, mem, rw := bootBusybox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	token := make([]byte, 24)
	rand.Read(token)
	values := [][]byte{
		[]byte("tok-" + hex.EncodeToString(token)),                        // text, like an API key
		func() []byte { b := make([]byte, 40); rand.Read(b); return b }(), // binary
		[]byte("on-demand-" + hex.EncodeToString(token[:12])),             // fetched only
	}
	var fps []leakscan.Fingerprint
	var lens []int
	for _, v := range values {
		fp, err := leakscan.New(v)
		if err != nil {
			t.Fatal(err)
		}
		fps, lens = append(fps, fp), append(lens, len(v))
	}
	sums := []string{}
	for _, v := range values {
		s := sha256.Sum256(v)
		sums = append(sums, hex.EncodeToString(s[:]))
	}
	send := [][]byte{bytes.Clone(values[0]), bytes.Clone(values[1])}
	vm.Client.SetFetchHandler(func(ctx context.Context, name string) ([]byte, func(), error) {
		v := bytes.Clone(values[2])
		return v, func() { clear(v) }, nil
	})
	t0 := time.Now()
	err := vm.Client.DeliverSecrets(ctx, channel.SecretsRequest{
		Items:    []channel.SecretItem{{Name: "API_TOKEN"}, {Name: "BLOB"}},
		OnDemand: []string{"DB_PASSWORD"},
	}, send)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("delivered 2 values in %v", time.Since(t0).Round(time.Millisecond))
	clear(send[0])
	clear(send[1])
	// Workloads read the values (only their hashes leave the guest); the
	// fetch client holds the on-demand value in its own memory until it
	// exits.
	fetchClient(t, vm)
	out := sh(t, vm, "cat /run/secrets/API_TOKEN /run/secrets/BLOB >/dev/null && sha256sum /run/secrets/API_TOKEN /run/secrets/BLOB && /tmp/fetch DB_PASSWORD")
	for _, v := range values {
		clear(v) // the test process's copies are not in guest RAM anyway
	}
	for _, s := range sums {
		if !strings.Contains(out, s) {
			t.Fatalf("guest files differ from the values: %s", out)
		}
	}

	// Control: before the purge the values are in RAM, and found.
	hits, err := leakscan.ScanFile(mem, fps)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, h := range hits {
		seen[h.Index] = true
	}
	if !seen[0] || !seen[1] {
		t.Fatalf("control: the values were not found in guest RAM before the purge (hits %v)", hits)
	}
	// The fetched value was never materialized: the agent's copies were
	// sealed or zeroed, the client's memory and the socket's buffers were
	// freed (and zeroed) when it exited.
	if seen[2] {
		t.Errorf("the on-demand value is still in guest RAM after its client exited:\n%s", describeHits(t, mem, hits, lens))
	}
	t.Logf("before purge: %d copies", len(hits))

	t0 = time.Now()
	purged, err := vm.Client.Purge(ctx)
	t.Logf("purged in %v", time.Since(t0).Round(time.Millisecond))
	if err != nil || len(purged) != 2 {
		t.Fatalf("purge: %v %v", purged, err)
	}
	// A snapshot pauses the guest before writing its RAM; do the same, so
	// the scan sees one moment.
	m := vm.Machine.(*qemu.Machine)
	if err := m.QMP(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	hits, err = leakscan.ScanFile(mem, fps)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scanned 256 MiB of guest RAM in %v", time.Since(start).Round(time.Millisecond))
	if len(hits) > 0 {
		t.Fatalf("%d copies left in guest RAM after the purge:\n%s", len(hits), describeHits(t, mem, hits, lens))
	}
	// Values live on the tmpfs only: the writable disk never held one.
	if hits, err := leakscan.ScanFile(rw, fps); err != nil || len(hits) > 0 {
		t.Fatalf("writable disk: %d copies, %v", len(hits), err)
	}
}

// OpResumed sets the guest's clock, reseeds its CRNG (which needs PID 1's
// CAP_SYS_ADMIN: this is the real ioctl path) and gives a fork a new
// identity.
func TestResumedInGuest(t *testing.T) {
	vm, _, _ := bootBusybox(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sh(t, vm, "echo 0123456789abcdef0123456789abcdef > /etc/machine-id")
	ahead := time.Now().Add(time.Hour)
	id := channel.NewMachineID()
	if err := vm.Client.Resumed(ctx, channel.ResumedRequest{UnixNano: ahead.UnixNano(), Hostname: "fork-1", MachineID: id}); err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(sh(t, vm, "date +%s; hostname; cat /etc/machine-id; echo $HOSTNAME"))
	if len(f) != 4 {
		t.Fatalf("guest said %q", f)
	}
	secs, _ := strconv.ParseInt(f[0], 10, 64)
	if d := secs - ahead.Unix(); d < -2 || d > 60 {
		t.Errorf("guest clock %d, want about %d", secs, ahead.Unix())
	}
	if f[1] != "fork-1" || f[3] != "fork-1" || f[2] != id {
		t.Errorf("identity: %q", f[1:])
	}
	// A plain resume: clock and entropy only.
	if err := vm.Client.Resumed(ctx, channel.ResumedRequest{}); err != nil {
		t.Fatal(err)
	}
	secs, _ = strconv.ParseInt(strings.TrimSpace(sh(t, vm, "date +%s")), 10, 64)
	if d := secs - time.Now().Unix(); d < -2 || d > 60 {
		t.Errorf("guest clock %d after a plain resume, host %d", secs, time.Now().Unix())
	}
}
