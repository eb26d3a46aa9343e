package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/vmm"
)

// TestBoot boots the guest with two disks and checks the serial console,
// the agent channel, QMP, the session, and a clean QMP shutdown.
func TestBoot(t *testing.T) {
	dir := t.TempDir()
	d0 := filepath.Join(dir, "zero,with comma.raw")
	d1 := filepath.Join(dir, "one.raw")
	for p, s := range map[string]string{d0: "disk-zero", d1: "disk-one"} {
		if err := os.WriteFile(p, append([]byte(s), make([]byte, 1<<20-len(s))...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	v := startVM(t, func(mc *MachineConfig) {
		mc.Disks = []vmm.Disk{{Path: d0}, {Path: d1, Format: "raw", ReadOnly: true}}
	})
	m := v.m
	t.Logf("command line: %s", strings.Join(m.Args(), " "))
	if m.Accel() == AccelTCG && !strings.Contains(strings.Join(m.Args(), " "), "tsc_early_khz=") {
		t.Errorf("TCG command line lacks tsc_early_khz: %q", m.Args())
	}

	ready := v.waitSerial(t, "GUEST_READY", 60*time.Second)
	t.Logf("start to GUEST_READY: %v", ready.Round(time.Millisecond))
	log, _ := os.ReadFile(v.serial)
	for _, want := range []string{"GUEST_DISK vda ro=0 disk-zero", "GUEST_DISK vdb ro=1 disk-one"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("serial log lacks %q:\n%s", want, log)
		}
	}
	v.echo(t, "hello over virtio-serial\n")
	v.echo(t, strings.Repeat("x", 100000)+"\n")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := m.QMP(ctx, "query-status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != "running" || !st.Running {
		t.Errorf("query-status = %+v, want running", st)
	}
	var qerr *Error
	if err := m.QMP(ctx, "no-such-command", nil, nil); !errors.As(err, &qerr) || qerr.Class != "CommandNotFound" {
		t.Errorf("unknown command: got %v, want a CommandNotFound *Error", err)
	}
	if v := m.Monitor().Greeting().Version.String(); !strings.HasPrefix(v, "7.") && !strings.HasPrefix(v, "8.") && !strings.HasPrefix(v, "9.") {
		t.Logf("QMP greeting version %s", v)
	}

	// Without DieWithParent QEMU leads its own session.
	if sid, err := unix.Getsid(m.PID()); err != nil || sid != m.PID() {
		t.Errorf("getsid(qemu) = %d, %v; want its own pid %d", sid, err, m.PID())
	}
	for _, p := range []string{v.serial, m.QMPSocket()} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if p == v.serial && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, fi.Mode().Perm())
		}
	}

	// A second machine may not take over a live machine's runtime dir.
	_, err := New(Options{}).StartWith(ctx, MachineConfig{Config: vmm.Config{
		Kernel: os.Args[0], Initrd: os.Args[0], RuntimeDir: filepath.Dir(m.QMPSocket())}})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second start in the same runtime dir: %v", err)
	}

	events, stop := m.Events()
	defer stop()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := m.Wait(); err != nil {
		t.Errorf("wait after quit: %v", err)
	}
	if r := m.ShutdownReason(); r != "host-qmp-quit" {
		t.Errorf("shutdown reason %q, want host-qmp-quit", r)
	}
	sawShutdown := false
	for ev := range events { // closed when QMP closes
		if ev.Event == "SHUTDOWN" {
			sawShutdown = true
		}
	}
	if !sawShutdown {
		t.Error("no SHUTDOWN event")
	}
	if err := syscall.Kill(m.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("qemu pid %d still exists after shutdown (kill 0: %v)", m.PID(), err)
	}
	if _, err := os.Stat(m.QMPSocket()); !os.IsNotExist(err) {
		t.Errorf("QMP socket left behind: %v", err)
	}
	if err := m.QMP(ctx, "query-status", nil, nil); !errors.Is(err, ErrMonitorClosed) {
		t.Errorf("QMP after exit: %v, want ErrMonitorClosed", err)
	}
	if err := m.Kill(); err != nil {
		t.Errorf("kill after exit: %v", err)
	}
}

// TestBootLoopTCG boots five times in a row: under TCG with the clock
// arguments no boot may hang. It alternates guest power-off and SIGKILL.
func TestBootLoopTCG(t *testing.T) {
	t.Setenv(AccelEnv, AccelTCG)
	const n = 5
	var times []string
	for i := range n {
		v := startVM(t, nil)
		qmpReady := time.Since(v.start)
		ready := v.waitSerial(t, "GUEST_READY", 30*time.Second)
		v.echo(t, fmt.Sprintf("ping %d\n", i))
		echoed := time.Since(v.start)
		times = append(times, fmt.Sprintf("boot %d: qmp %v, marker %v, echo %v", i+1,
			qmpReady.Round(time.Millisecond), ready.Round(time.Millisecond), echoed.Round(time.Millisecond)))
		if i%2 == 0 {
			if _, err := v.conn.Write([]byte("poweroff\n")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-v.m.Done():
			case <-time.After(30 * time.Second):
				t.Fatal("guest power-off did not end QEMU")
			}
			if err := v.m.Wait(); err != nil {
				t.Errorf("wait after guest power-off: %v", err)
			}
			if r := v.m.ShutdownReason(); r != "guest-shutdown" {
				t.Errorf("shutdown reason %q, want guest-shutdown", r)
			}
		} else {
			if err := v.m.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := v.m.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
				t.Errorf("wait after kill: %v, want a 'killed' error", err)
			}
		}
	}
	for _, s := range times {
		t.Log(s)
	}
}

const childEnv = "MICROAGENT_QEMU_TEST_CHILD"

// dieWithParentChild runs in a child test process: it starts QEMU with
// DieWithParent, prints its pid and waits to be killed.
func dieWithParentChild() int {
	dir := os.Getenv("MICROAGENT_TEST_DIR")
	m, err := New(Options{Accel: AccelTCG}).StartWith(context.Background(), MachineConfig{Config: vmm.Config{
		Kernel:        os.Getenv("MICROAGENT_TEST_KERNEL"),
		Initrd:        os.Getenv("MICROAGENT_TEST_INITRD"),
		SerialLog:     filepath.Join(dir, "serial.log"),
		RuntimeDir:    filepath.Join(dir, "run"),
		DieWithParent: true,
		Network:       &vmm.Network{}, // the network helper must die too
	}})
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	fmt.Println("PID", m.PID(), m.NetworkPID())
	select {
	case <-m.Done():
		fmt.Println("ERROR qemu exited:", m.Wait())
		return 1
	case <-time.After(2 * time.Minute):
		return 1
	}
}

// TestDieWithParent kills -9 a process that started QEMU with
// DieWithParent and checks QEMU goes away too.
func TestDieWithParent(t *testing.T) {
	kernel, initrd := testGuest(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=1", "MICROAGENT_TEST_KERNEL="+kernel,
		"MICROAGENT_TEST_INITRD="+initrd, "MICROAGENT_TEST_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the child's output: %v", err)
	}
	pidStr, ok := strings.CutPrefix(strings.TrimSpace(line), "PID ")
	if !ok {
		t.Fatalf("child: %s", line)
	}
	qemuStr, netStr, _ := strings.Cut(pidStr, " ")
	pid, _ := strconv.Atoi(qemuStr)
	netPID, _ := strconv.Atoi(netStr)
	if netPID == 0 {
		t.Error("the machine has no network helper")
	}
	if !alive(pid) {
		t.Fatalf("qemu pid %d not running before the kill", pid)
	}
	// QEMU stays in the caller's process group.
	if pgid, _ := syscall.Getpgid(pid); pgid == pid {
		t.Errorf("qemu leads its own process group with DieWithParent")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed := time.Now()
	for alive(pid) {
		if time.Since(killed) > 10*time.Second {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("qemu pid %d still alive 10 s after its parent was killed", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("qemu gone %v after its parent was killed", time.Since(killed).Round(time.Millisecond))
	for netPID != 0 && alive(netPID) {
		if time.Since(killed) > 10*time.Second {
			syscall.Kill(netPID, syscall.SIGKILL)
			t.Fatalf("network helper pid %d still alive 10 s after its parent was killed", netPID)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if netPID != 0 {
		t.Logf("network helper gone %v after its parent was killed", time.Since(killed).Round(time.Millisecond))
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestStartErrors checks the errors for a missing binary, missing files
// and a QEMU that exits during start.
func TestStartErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	initrd := filepath.Join(dir, "initrd")
	os.WriteFile(kernel, []byte("not a kernel"), 0o600)
	os.WriteFile(initrd, []byte("not an initrd"), 0o600)
	base := vmm.Config{Kernel: kernel, Initrd: initrd, RuntimeDir: filepath.Join(dir, "run")}

	_, err := New(Options{Binary: filepath.Join(dir, "no-qemu")}).Start(ctx, base)
	if err == nil || !strings.Contains(err.Error(), "QEMU not found") ||
		!strings.Contains(err.Error(), "apt-get install --no-install-recommends qemu-system-x86") {
		t.Errorf("missing binary: %v", err)
	}

	// A "QEMU" that never answers QMP: the context bounds the start and
	// the process is killed.
	hang := filepath.Join(dir, "hang.sh")
	os.WriteFile(hang, []byte("#!/bin/sh\necho still starting >&2\nexec sleep 60\n"), 0o700)
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := New(Options{Binary: hang, Accel: AccelTCG}).Start(tctx, base); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hanging binary: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("hanging binary: start returned after %v", d)
	}
	// A "QEMU" that fails with a message and status 3.
	fail := filepath.Join(dir, "fail.sh")
	os.WriteFile(fail, []byte("#!/bin/sh\necho boom: no such thing >&2\nexit 3\n"), 0o700)
	if _, err := New(Options{Binary: fail, Accel: AccelTCG}).Start(ctx, base); err == nil ||
		!strings.Contains(err.Error(), "boom: no such thing") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("failing binary: %v", err)
	}

	requireQEMU(t)
	b := New(Options{Accel: AccelTCG})
	c := base
	c.Kernel = filepath.Join(dir, "missing-vmlinux")
	if _, err := b.Start(ctx, c); err == nil || !strings.Contains(err.Error(), "kernel") ||
		!strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "microagent kernel install") {
		t.Errorf("missing kernel: %v", err)
	}
	c = base
	c.Initrd = filepath.Join(dir, "missing-initrd")
	if _, err := b.Start(ctx, c); err == nil || !strings.Contains(err.Error(), "initramfs") {
		t.Errorf("missing initrd: %v", err)
	}
	c = base
	c.Disks = []vmm.Disk{{Path: filepath.Join(dir, "nodisk")}}
	if _, err := b.Start(ctx, c); err == nil || !strings.Contains(err.Error(), "disk 0") {
		t.Errorf("missing disk: %v", err)
	}
	c = base
	c.Disks = []vmm.Disk{{Path: kernel, Format: "vmdk"}}
	if _, err := b.Start(ctx, c); err == nil || !strings.Contains(err.Error(), "unsupported format") {
		t.Errorf("bad disk format: %v", err)
	}
	if _, err := New(Options{Accel: "hvf"}).Start(ctx, base); err == nil || !strings.Contains(err.Error(), "accelerator") {
		t.Errorf("bad accelerator: %v", err)
	}

	// QEMU rejects an option: its stderr must be in the error.
	start = time.Now()
	_, err = b.StartWith(ctx, MachineConfig{Config: base, ExtraArgs: []string{"-no-such-option"}})
	if err == nil || !strings.Contains(err.Error(), "exited during start") ||
		!strings.Contains(err.Error(), "-no-such-option") || !strings.Contains(err.Error(), "invalid option") {
		t.Errorf("bad option: %v", err)
	}
	t.Logf("bad option error after %v: %v", time.Since(start).Round(time.Millisecond), err)

	// QEMU starts but cannot load the kernel.
	_, err = b.Start(ctx, base)
	if err == nil || !strings.Contains(err.Error(), "exited during start") || !strings.Contains(err.Error(), "kernel") {
		t.Errorf("bad kernel: %v", err)
	}
	t.Logf("bad kernel error: %v", err)
	if entries, _ := os.ReadDir(base.RuntimeDir); len(entries) != 0 {
		t.Errorf("runtime dir not cleaned after failed starts: %v", entries)
	}

	// A cancelled context stops the start.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Start(cctx, base); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled start: %v", err)
	}
}

func TestVersion(t *testing.T) {
	requireQEMU(t)
	v, err := Version("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseVersion("QEMU emulator version " + v); err != nil || !strings.Contains(v, ".") {
		t.Errorf("Version() = %q, %v", v, err)
	}
	t.Logf("QEMU %s", v)
	if _, err := Version("/nonexistent/qemu"); err == nil || !strings.Contains(err.Error(), "QEMU not found") {
		t.Errorf("missing binary: %v", err)
	}
}

// TestShutdownFallback: a QEMU that cannot answer "quit" (stopped with
// SIGSTOP) is killed when the Shutdown context ends.
func TestShutdownFallback(t *testing.T) {
	v := startVM(t, func(mc *MachineConfig) { mc.Incoming = true }) // paused: no guest CPU time
	if err := syscall.Kill(v.m.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := v.m.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "killed") {
		t.Errorf("shutdown of a stopped QEMU: %v", err)
	}
	select {
	case <-v.m.Done():
	default:
		t.Fatal("QEMU still running after Shutdown returned")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if err := v.m.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("wait: %v", err)
	}
}

// TestDialAgent: a booting machine's agent connection is made before QEMU
// starts and its socket path is gone at once; a machine started with
// Incoming keeps the path until DialAgent; either gives out one
// connection, and a machine without an agent port none.
func TestDialAgent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sock := func(v *testVM) string { return filepath.Join(filepath.Dir(v.serial), "run", agentSocketName) }

	boot := startVM(t, nil)
	if _, err := os.Stat(sock(boot)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a booting machine's agent socket path is still there: %v", err)
	}
	c, err := boot.m.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := boot.m.DialAgent(ctx); err == nil || !strings.Contains(err.Error(), "one host end") {
		t.Errorf("second DialAgent: %v", err)
	}
	boot.conn = c
	boot.waitSerial(t, "GUEST_READY", 60*time.Second)
	boot.echo(t, "over the connection made at start\n")

	in := startVM(t, func(mc *MachineConfig) { mc.Incoming = true })
	if _, err := os.Stat(sock(in)); err != nil {
		t.Errorf("an incoming machine's agent socket path: %v", err)
	}
	ic, err := in.m.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ic.Close()
	if _, err := os.Stat(sock(in)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the agent socket path is still there after DialAgent: %v", err)
	}
	if _, err := in.m.DialAgent(ctx); err == nil {
		t.Error("second DialAgent of an incoming machine: no error")
	}
	must(t, in.m.Kill())

	none := startVM(t, func(mc *MachineConfig) { mc.ChannelName = "" })
	if _, err := none.m.DialAgent(ctx); err == nil || !strings.Contains(err.Error(), "no agent port") {
		t.Errorf("DialAgent without an agent port: %v", err)
	}
	if strings.Contains(strings.Join(none.m.Args(), " "), "virtio-serial") {
		t.Errorf("a machine without an agent port has virtio-serial: %q", none.m.Args())
	}
}
