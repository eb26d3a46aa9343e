package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/internal/testenv"
)

// TestPortForwardCommand forwards a free local port to httpd on an
// isolated workspace's loopback through the real binary: pages come back,
// a refused port is reported on stderr while the command goes on, Ctrl-C
// ends it with exit 0, and a workspace that stops ends it with exit 1
// (with --json: the listener as JSON, the error too).
func TestPortForwardCommand(t *testing.T) {
	w, ref := vmCLI(t)
	w.want(t, 0, "", "create", "pf", "--image", ref, "--profile", "tiny", "--network", "isolated")
	w.want(t, 0, "Started pf", "start", "pf")
	w.want(t, 0, "", "exec", "pf", "--", "sh", "-c", "mkdir -p /www && echo hello > /www/x && httpd -p 127.0.0.1:8080 -h /www")

	closed := testenv.MustFreePort(t)
	cmd := w.cmd("port-forward", "pf", ":8080", fmt.Sprintf("%d:9999", closed))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	errDone := make(chan struct{})
	go func() { io.Copy(&stderr, errPipe); close(errDone) }()
	lines := bufio.NewScanner(stdout)
	var webPort string
	re := regexp.MustCompile(`^Forwarding from 127\.0\.0\.1:(\d+) -> (8080|9999)$`)
	for range 2 {
		if !lines.Scan() {
			t.Fatalf("port-forward printed no listener: %v", lines.Err())
		}
		m := re.FindStringSubmatch(lines.Text())
		if m == nil {
			t.Fatalf("port-forward printed %q", lines.Text())
		}
		if m[2] == "8080" {
			webPort = m[1]
		} else if m[1] != fmt.Sprint(closed) {
			t.Fatalf("9999 listens on %s locally, not %d", m[1], closed)
		}
	}
	url := fmt.Sprintf("http://127.0.0.1:%s/x", webPort)
	t.Logf("a page through port-forward after %v", testenv.Fetch(t, url, "hello\n"))

	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", closed), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	if b, _ := io.ReadAll(c); len(b) != 0 { // closed after the guest's refusal
		t.Fatalf("the refused port answered %q", b)
	}
	c.Close()
	testenv.Fetch(t, url, "hello\n") // still forwarding
	cmd.Process.Signal(os.Interrupt)
	<-errDone
	err = cmd.Wait()
	if err != nil {
		t.Fatalf("port-forward after Ctrl-C: %v; stderr %q", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "nothing listens on 127.0.0.1:9999") {
		t.Fatalf("stderr does not say the guest refused 9999: %q", stderr.String())
	}
	t.Logf("stderr: %s", strings.TrimSpace(stderr.String()))

	cmd = w.cmd("--json", "port-forward", "pf", fmt.Sprintf("%d:8080", closed))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &stderr
	stderr.Reset()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	url = fmt.Sprintf("http://127.0.0.1:%d/x", closed)
	testenv.Fetch(t, url, "hello\n")
	w.want(t, 0, "", "halt", "pf")
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", closed)); err == nil {
		c.Close()
	}
	var ee *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &ee) || ee.ExitCode() != ExitFailure || !strings.Contains(stderr.String(), "pf is halted") {
		t.Fatalf("port-forward to a halted workspace: %v; stderr %q", err, stderr.String())
	}
	if want := fmt.Sprintf(`{"address":"127.0.0.1","guest":8080,"local":%d}`+"\n", closed); out.String() != want {
		t.Fatalf("--json printed %q, want %q", out.String(), want)
	}
	t.Logf("after the halt: %s", strings.TrimSpace(stderr.String()))
}
