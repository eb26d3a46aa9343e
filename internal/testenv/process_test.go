package testenv

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestProcessExitsEarly(t *testing.T) {
	p, err := StartProcess(exec.Command("sh", "-c", "echo out; echo err >&2; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// Nothing listens on port, so only the exit ends the wait early.
	err = WaitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", port), time.Second, 30*time.Second, p.Exited())
	if !errors.Is(err, ErrExited) {
		t.Fatalf("WaitHTTP = %v, want ErrExited", err)
	}
	if out := p.Output(); !strings.Contains(out, "out") || !strings.Contains(out, "err") {
		t.Fatalf("output %q lacks stdout or stderr", out)
	}
	p.Stop() // after the process exited by itself
	p.Stop()
}

func TestProcessStop(t *testing.T) {
	p, err := StartProcess(exec.Command("sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
		t.Fatal("exited before Stop")
	default:
	}
	p.Stop()
	p.Stop()
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited not closed after Stop")
	}
}

func TestStartProcessMissingBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "absent")
	_, err := StartProcess(exec.Command(bin))
	if err == nil || !strings.HasPrefix(err.Error(), "start "+bin+": ") {
		t.Fatalf("err = %v, want one naming %s", err, bin)
	}
}

func TestWaitHTTP(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()

	err := WaitHTTP(srv.URL, time.Second, 100*time.Millisecond, nil)
	var nr *NotReadyError
	if !errors.As(err, &nr) || nr.Last != nil || err.Error() != "last error <nil>" {
		t.Fatalf("WaitHTTP on a 503 server = %v, want a NotReadyError with no last error", err)
	}

	status.Store(http.StatusOK)
	if err := WaitHTTP(srv.URL, time.Second, 5*time.Second, nil); err != nil {
		t.Fatalf("WaitHTTP on a 200 server = %v", err)
	}
}
