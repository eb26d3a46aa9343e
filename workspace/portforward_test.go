package workspace

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/vmm"
)

// TestDialPort boots an isolated workspace (only lo: the forward cannot be
// using a NIC) and reaches servers on its loopback through DialPort: an
// HTTP round trip that the server ends, an echo whose end the host sends
// as a half-close, a refused port, the host's bound on connections at
// once, and the count going back to zero when the host closes first.
func TestDialPort(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)
	if _, err := Create(ctx, e.h, CreateOptions{Name: "pf", Image: e.ref, Agent: e.agent, Profile: "tiny",
		Resources: Resources{DiskBytes: 256 << 20}, Network: vmm.Network{Mode: vmm.NetworkIsolated}}); err != nil {
		t.Fatal(err)
	}
	e.start(t, "pf")
	const big = 8 << 20
	// httpd daemonizes; the echo server is put in a session of its own.
	code, out, errs := e.exec(t, "pf", "", "sh", "-c", fmt.Sprintf(
		"mkdir -p /www && echo hello > /www/x && head -c %d /dev/urandom > /www/big && sha256sum /www/big && httpd -p 8080 -h /www && "+
			"(setsid nc -ll -p 9000 -e cat </dev/null >/dev/null 2>&1 &)", big))
	if code != 0 {
		t.Fatalf("start the servers: %d %q %q", code, out, errs)
	}
	bigSum := strings.Fields(out)[0]
	dial := func(port uint16) net.Conn {
		t.Helper()
		var conn net.Conn
		// The echo server may not listen yet when the exec returns.
		waitFor(t, fmt.Sprintf("port %d to be served", port), 30*time.Second, func() bool {
			var err error
			conn, err = DialPort(ctx, e.h, "pf", port)
			if errors.Is(err, channel.ErrPortRefused) {
				return false
			}
			if err != nil {
				t.Fatalf("dial port %d: %v", port, err)
			}
			return true
		})
		conn.SetDeadline(time.Now().Add(2 * time.Minute))
		return conn
	}
	get := func(path string) []byte {
		t.Helper()
		conn := dial(8080)
		defer conn.Close()
		fmt.Fprintf(conn, "GET %s HTTP/1.0\r\n\r\n", path)
		b, err := io.ReadAll(conn) // httpd closes: the guest's end is EOF here
		if err != nil {
			t.Fatalf("GET %s: %v after %d bytes", path, err, len(b))
		}
		_, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
		if !ok || !bytes.HasPrefix(b, []byte("HTTP/1.1 200")) {
			t.Fatalf("GET %s: %q", path, b[:min(len(b), 200)])
		}
		return body
	}
	if body := get("/x"); string(body) != "hello\n" {
		t.Fatalf("GET /x: body %q", body)
	}
	t0 := time.Now()
	body := get("/big")
	took := time.Since(t0)
	if len(body) != big || fmt.Sprintf("%x", sha256.Sum256(body)) != bigSum {
		t.Fatalf("GET /big: %d bytes, want %d with sha256 %s", len(body), big, bigSum)
	}
	t.Logf("8 MiB from the guest's httpd in %v (%.1f MB/s)", took.Round(time.Millisecond), float64(big)/took.Seconds()/1e6)

	// The host's half-close reaches the guest: cat reads EOF and exits,
	// and the echo ends on the host's side after the echoed bytes.
	echo := dial(9000).(*net.UnixConn)
	if _, err := echo.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	echo.CloseWrite()
	if b, err := io.ReadAll(echo); err != nil || string(b) != "ping\n" {
		t.Fatalf("echo: %q %v", b, err)
	}
	echo.Close()

	_, err := DialPort(ctx, e.h, "pf", 9999)
	if !errors.Is(err, channel.ErrPortRefused) || !strings.Contains(err.Error(), "127.0.0.1:9999") {
		t.Fatalf("dial a port nothing listens on: %v", err)
	}
	t.Logf("refused: %v", err)

	// The supervisor's bound: MaxForwards open, the next refused as busy;
	// closing them from the host frees every slot.
	conns := make([]net.Conn, 0, supervisor.MaxForwards)
	for range supervisor.MaxForwards {
		conns = append(conns, dial(9000))
	}
	if inf := e.status(t, "pf"); inf.Forwards != supervisor.MaxForwards {
		t.Fatalf("status: %d forwards open, want %d", inf.Forwards, supervisor.MaxForwards)
	}
	_, err = DialPort(ctx, e.h, "pf", 9000)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "port-forward connections open") {
		t.Fatalf("dial beyond the bound: %v", err)
	}
	t.Logf("over the bound: %v", err)
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, "the closed forwards to end", time.Minute, func() bool { return e.status(t, "pf").Forwards == 0 })
	// And the workspace goes on serving.
	if body := get("/x"); string(body) != "hello\n" {
		t.Fatalf("GET /x after: body %q", body)
	}
}
