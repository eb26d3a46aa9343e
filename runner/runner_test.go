package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/testenv/vmenv"
	"github.com/microagent-dev/microagent/kernel"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

// Every test here boots real VMs (TCG on hosts without KVM) from images
// served by a real registry, and checks that nothing is left behind.

type env struct {
	h   home.Home
	reg *testenv.Registry
}

func setup(t *testing.T) *env {
	t.Helper()
	h := vmenv.VMHome(t)
	return &env{h: h, reg: testenv.StartRegistry(t)}
}

func (e *env) run(t *testing.T, ctx context.Context, o Options) (*Result, string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	o.Stdout, o.Stderr = &out, &errb
	o.Agent = vmenv.Agent(t)
	if o.Backend == nil {
		o.Backend = qemu.New(qemu.Options{})
	}
	if ctx == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
	}
	r, err := Run(ctx, e.h, o)
	e.assertClean(t)
	return r, out.String(), errb.String(), err
}

// assertClean checks that a run left no runtime files and no VMM process.
func (e *env) assertClean(t *testing.T) {
	t.Helper()
	ents, _ := os.ReadDir(e.h.Path(home.RunDir))
	if len(ents) != 0 {
		t.Errorf("run directory not cleaned: %d entries left", len(ents))
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(e.h.Root)) {
			t.Errorf("process left behind: %s", strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

func opts(ref string, cmd ...string) Options {
	return Options{PrepareOptions: guestboot.PrepareOptions{Image: ref}, Command: cmd}
}

func TestRunExitCodesAndStreams(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	r, out, errs, err := e.run(t, nil, opts(ref, "sh", "-c", "echo hello; echo oops >&2; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Exit.Code != 3 || out != "hello\n" || errs != "oops\n" {
		t.Fatalf("got %+v %q %q", r.Exit, out, errs)
	}
	r, _, _, err = e.run(t, nil, opts(ref, "sh", "-c", "kill -KILL $$"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Exit.Signal != int(syscall.SIGKILL) || r.Exit.Code != 137 {
		t.Fatalf("signal: got %+v", r.Exit)
	}
	r, _, _, err = e.run(t, nil, opts(ref, "no-such-program", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Exit.Code != 127 || !strings.Contains(r.Exit.Error, `"no-such-program" not found in the image`) {
		t.Fatalf("command not found: got %+v", r.Exit)
	}
}

func TestRunStdinAndTenMiBExact(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	in := strings.Repeat("stdin line\n", 1000)
	o := opts(ref, "sh", "-c", "cat; yes 0123456789abcdef | head -c 10485760 >&2")
	o.Stdin = strings.NewReader(in)
	r, out, errs, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat("0123456789abcdef\n", 10485760/17+1)[:10485760]
	if r.Exit.Code != 0 || out != in {
		t.Fatalf("stdin echo: code %d, %d bytes back of %d", r.Exit.Code, len(out), len(in))
	}
	if sha256.Sum256([]byte(errs)) != sha256.Sum256([]byte(want)) {
		t.Fatalf("10 MiB stream differs: got %d bytes", len(errs))
	}
}

func TestRunImageConfigEnvCwdUser(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushUser(t, "user")
	// No command: the image's Entrypoint and Cmd, as its User in its WorkingDir.
	r, out, _, err := e.run(t, nil, opts(ref))
	if err != nil {
		t.Fatal(err)
	}
	if r.Exit.Code != 0 || out != testenv.UserOutput {
		t.Fatalf("image config: %+v %q, want %q", r.Exit, out, testenv.UserOutput)
	}
	// Overrides: the command replaces Cmd (the entrypoint is sh -c), -e, cwd, user.
	o := opts(ref, `echo "$FOO $EXTRA $HOME"; pwd; id -u; hostname; touch /root/x && echo wrote`)
	o.Env = []string{"EXTRA=yes", "FOO=over"}
	o.Cwd = "/tmp"
	o.User = "root"
	o.Hostname = "box1"
	r, out, errs, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if want := "over yes /root\n/tmp\n0\nbox1\nwrote\n"; r.Exit.Code != 0 || out != want {
		t.Fatalf("overrides: %+v %q (stderr %q), want %q", r.Exit, out, errs, want)
	}
}

func TestRunWhiteoutsAndFileMetadata(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushWhiteout(t, "whiteout")
	script := fmt.Sprintf(`
test -e %[1]s && echo "deleted file present"
cat %[2]s
ls -A %[3]s
stat -c '%%a' %[4]s
stat -c '%%i' %[5]s %[6]s | uniq | wc -l
readlink %[7]s
stat -c '%%t:%%T %%F' %[8]s
stat -c '%%u:%%g %%a' %[9]s
echo guest-writes > /special/new && cat /special/new
`, testenv.WhiteoutDeletedFile, testenv.WhiteoutKeptFile, testenv.OpaqueDir, testenv.SetuidFile,
		testenv.HardLinkName, testenv.HardLinkTarget, testenv.SymlinkName, testenv.CharDevice, testenv.OwnedFile)
	r, out, errs, err := e.run(t, nil, opts(ref, "sh", "-c", script))
	if err != nil {
		t.Fatal(err)
	}
	want := testenv.WhiteoutKeptContent +
		filepath.Base(testenv.OpaqueNewFile) + "\n" +
		fmt.Sprintf("%o\n", testenv.SetuidMode) +
		"1\n" +
		testenv.SymlinkTarget + "\n" +
		fmt.Sprintf("%x:%x character special file\n", testenv.CharDeviceMajor, testenv.CharDeviceMinor) +
		fmt.Sprintf("%d:%d 640\n", testenv.OwnedUID, testenv.OwnedGID) +
		"guest-writes\n"
	if r.Exit.Code != 0 || out != want {
		t.Fatalf("guest view of the image:\n got %q\nwant %q\nstderr %q", out, want, errs)
	}
}

func TestRunMirrorAndLoad(t *testing.T) {
	e := setup(t)
	e.reg.PushImage(t, "library/alpine:3.20", testenv.BusyboxImage(t))
	t.Setenv("MICROAGENT_REGISTRY_MIRRORS", "docker.io="+e.reg.URL)
	r, out, _, err := e.run(t, nil, opts("docker.io/library/alpine:3.20", "echo", "via-mirror"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Exit.Code != 0 || out != "via-mirror\n" {
		t.Fatalf("mirror: %+v %q", r.Exit, out)
	}

	// image load of a docker-save tarball, run without any registry.
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	testenv.WriteDockerSave(t, testenv.UserImage(t), "example.com/loaded:v1", tarPath)
	s, err := image.OpenStore(e.h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(context.Background(), tarPath); err != nil {
		t.Fatal(err)
	}
	e.reg.Stop()
	o := opts("example.com/loaded:v1")
	o.Pull = image.PullNever
	r, out, _, err = e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Exit.Code != 0 || out != testenv.UserOutput {
		t.Fatalf("loaded image: %+v %q", r.Exit, out)
	}
}

func TestRunBadInputs(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	cases := []struct {
		name string
		o    Options
		want string
	}{
		{"unknown image", opts(e.reg.Ref("nope:1"), "true"), "nope"},
		{"unreachable registry", opts("127.0.0.1:1/x/y:1", "true"), "127.0.0.1:1"},
		{"missing kernel", func() Options { o := opts(ref, "true"); o.KernelPath = "/no/such/vmlinux"; return o }(), "/no/such/vmlinux"},
		{"qemu missing", func() Options {
			o := opts(ref, "true")
			o.Backend = qemu.New(qemu.Options{Binary: "/no/such/qemu-system-x86_64"})
			return o
		}(), "QEMU not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, _, err := e.run(t, nil, c.o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error naming %q, got %v", c.want, err)
			}
		})
	}

	// A corrupt kernel is refused before boot and named with its fix.
	k, err := kernel.Default(e.h)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(k.Vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	// The file is a hard link into the shared test kernel: replace, don't modify.
	bad := append([]byte{}, orig...)
	bad[len(bad)/2] ^= 0xff
	tmp := k.Vmlinux + ".tmp"
	if err := os.WriteFile(tmp, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, k.Vmlinux); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = e.run(t, nil, opts(ref, "true"))
	if err == nil || !strings.Contains(err.Error(), "kernel install --force") {
		t.Fatalf("corrupt kernel: got %v", err)
	}
}

func TestRunInterruptedDuringBoot(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	// Warm the caches first so the cancel lands in the boot itself.
	if _, err := guestboot.Prepare(context.Background(), e.h, guestboot.PrepareOptions{Image: ref, Agent: vmenv.Agent(t)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, _, err := e.run(t, ctx, opts(ref, "sleep", "60"))
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want an interrupted boot, got %v", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("cancellation took %s", d)
	}
}

func TestRunTimeout(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	o := opts(ref, "sleep", "60")
	o.Timeout = time.Second
	r, _, _, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Exit.TimedOut {
		t.Fatalf("want a timeout, got %+v", r.Exit)
	}
}

// The spec's `run` transcript: a secret from the CLI's environment lands in
// a tmpfs as a 0400 root file with the exact bytes.
func TestRunSecretsSpec(t *testing.T) {
	e := setup(t)
	e.reg.PushImage(t, "library/alpine:3.20", testenv.BusyboxImage(t))
	t.Setenv("MICROAGENT_REGISTRY_MIRRORS", "docker.io="+e.reg.URL)
	t.Setenv("API_TOKEN", "tk-demo-0123456789abcdef0123456789abcdef")
	var d secrets.Declarations
	decl, err := secrets.ParseDecl("API_KEY=env:API_TOKEN")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Add(decl); err != nil {
		t.Fatal(err)
	}
	var warn bytes.Buffer
	o := opts("docker.io/library/alpine:3.20", "sh", "-c", "ls -l /run/secrets && wc -c /run/secrets/API_KEY && mount | grep /run/secrets && cat /run/secrets/API_KEY")
	o.Secrets, o.Warnings = d, &warn
	r, out, errs, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var ls []string
	for _, l := range lines {
		if strings.HasSuffix(l, " API_KEY") {
			ls = strings.Fields(l)
		}
	}
	if r.Exit.Code != 0 || len(ls) < 9 || ls[0] != "-r--------" || ls[2] != "root" || ls[3] != "root" || ls[4] != "40" ||
		!strings.Contains(out, "\n40 /run/secrets/API_KEY\n") || !strings.Contains(out, "tmpfs on /run/secrets type tmpfs") ||
		!strings.HasSuffix(out, "tk-demo-0123456789abcdef0123456789abcdef") {
		t.Fatalf("guest view: %+v\n%s\nstderr %q", r.Exit, out, errs)
	}
	if want := "warning: secret scheme \"env\" is plaintext: not encrypted at rest, not for production\n"; warn.String() != want {
		t.Fatalf("warning %q, want %q", warn.String(), want)
	}
}

// On-demand secrets over the guest socket, answered by the host per fetch,
// read by a real python3 as in the spec; undeclared names are denied.
func TestRunSecretOnDemand(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushImage(t, "python", testenv.PythonImage(t))
	t.Setenv("DB_PW", "hunter2-but-longer")
	var d secrets.Declarations
	decl, _ := secrets.ParseDecl("DB_PASSWORD=env:DB_PW")
	decl.OnDemand = true
	if err := d.Add(decl); err != nil {
		t.Fatal(err)
	}
	script := `import socket,os
for name in ("DB_PASSWORD", "OTHER"):
    s=socket.socket(socket.AF_UNIX); s.connect(os.environ['MICROAGENT_SECRETS_SOCK']); s.sendall(b'GET '+name.encode()+b'\n'); print(s.recv(4096).decode().strip())
print(os.path.exists('/run/secrets/DB_PASSWORD'))`
	o := opts(ref, "python3", "-c", script)
	o.Secrets = d
	r, out, errs, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if r.Exit.Code != 0 || len(lines) != 3 || lines[0] != `{"ok":true,"value":"aHVudGVyMi1idXQtbG9uZ2Vy"}` ||
		!strings.Contains(lines[1], `"ok": false`) && !strings.Contains(lines[1], `"ok":false`) {
		t.Fatalf("%+v\n%s\nstderr %q", r.Exit, out, errs)
	}
	if lines[2] != "False" {
		t.Fatalf("an on-demand secret was materialized: %s", lines[2])
	}
}

// Fail closed: a reference that cannot be resolved stops the run before any
// VM boots.
func TestRunSecretFailsClosed(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	for _, s := range []string{"X=env:MICROAGENT_TEST_UNSET_VAR", "X=file:/no/such/file", "X=nosuch:thing"} {
		var d secrets.Declarations
		decl, err := secrets.ParseDecl(s)
		if err == nil {
			err = d.Add(decl)
		}
		if err != nil {
			if !strings.Contains(s, "nosuch") {
				t.Fatalf("%s: %v", s, err)
			}
			continue // an unknown scheme is refused at declaration already
		}
		// A counting backend proves no VM starts (a time bound did too,
		// and flaked on a loaded host).
		b := &countingBackend{Backend: qemu.New(qemu.Options{})}
		o := opts(ref, "true")
		o.Secrets = d
		o.Backend = b
		_, _, _, err = e.run(t, nil, o)
		if err == nil || !strings.Contains(err.Error(), "X") {
			t.Fatalf("%s: want an error naming the secret, got %v", s, err)
		}
		if n := b.starts.Load(); n != 0 {
			t.Fatalf("%s: %d VM(s) started before the secret failed", s, n)
		}
	}
}

// A guest's root spamming /dev/console during a one-shot run: the run's
// console log stays under its cap (8 MiB plus a second or two of output)
// with one rotation beside it, as a workspace's does.
func TestRunConsoleFloodCapped(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	stop := make(chan struct{})
	peaks := make(chan [2]int64, 1)
	go func() {
		var peak, rot int64
		defer func() { peaks <- [2]int64{peak, rot} }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			logs, _ := filepath.Glob(e.h.Path(home.RunDir, "*", "console.log*"))
			for _, p := range logs {
				fi, err := os.Stat(p)
				switch {
				case err != nil:
				case strings.HasSuffix(p, ".1"):
					rot = max(rot, fi.Size())
				default:
					peak = max(peak, fi.Size())
				}
			}
		}
	}()
	const flood = 10 << 20 // the UART manages about 0.3 MB/s: ~35 s
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t0 := time.Now()
	r, _, errs, err := e.run(t, ctx, opts(ref, "sh", "-c", "head -c "+strconv.Itoa(flood)+" /dev/zero | tr '\\0' x > /dev/console"))
	took := time.Since(t0)
	close(stop)
	p := <-peaks
	if err != nil || r.Exit.Code != 0 {
		t.Fatalf("flood: %+v %v %s", r, err, errs)
	}
	rate := float64(flood) / took.Seconds()
	t.Logf("%d MiB to /dev/console in %v: console.log peaked at %.1f MiB, console.log.1 at %.1f MiB",
		flood>>20, took.Round(time.Millisecond), float64(p[0])/(1<<20), float64(p[1])/(1<<20))
	if p[1] == 0 {
		t.Errorf("no rotation seen after %d MiB on the console", flood>>20)
	}
	if ceiling := int64(8<<20 + 3*rate); p[0] > ceiling || p[1] > ceiling {
		t.Errorf("console logs peaked at %d and %d bytes: over %d", p[0], p[1], ceiling)
	}
}
