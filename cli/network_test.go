package cli

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/workspace"
)

// TestCreateNetworkBadInput: a network spec that can never work is a usage
// error (exit 2) and creates nothing; the image is never looked at.
func TestCreateNetworkBadInput(t *testing.T) {
	w := &wsCLI{bin: buildCLI(t), state: t.TempDir()}
	for _, c := range []struct {
		msg  string
		args []string
	}{
		{"out of range", []string{"-p", "99999:80"}},
		{"only tcp", []string{"-p", "8080:80/udp"}},
		{"not an IPv4 address", []string{"-p", "localhost:8080:80"}},
		{"published twice", []string{"-p", "8080:80", "-p", "8080:81"}},
		{"isolated network has no network device", []string{"--network", "isolated", "-p", "8080:80"}},
		{"isolated network has none", []string{"--network", "isolated", "--host-access"}},
		{"unknown network mode", []string{"--network", "bridge"}},
		{"not an IP address", []string{"--dns", "resolver.example"}},
		{"add --host-access", []string{"--dns", "10.0.2.2"}},
		{"IPv4", []string{"--host-access", "--dns", "::1"}},
		{"is not a port", []string{"--host-access=99999"}},
		{"covers the host's loopback", []string{"--egress-allow-cidr", "127.0.0.0/8"}},
		{"no wildcards", []string{"--egress-allow", "pypi.*"}},
	} {
		w.want(t, ExitUsage, c.msg, append([]string{"create", "app", "--image", "127.0.0.1:1/none"}, c.args...)...)
	}
	if ents, _ := os.ReadDir(filepath.Join(w.state, workspace.Dir)); len(ents) != 0 {
		t.Fatalf("bad input created something: %v", ents)
	}
}

// TestWorkspaceNetworkCLI: a port published at create is served after
// start and after halt/start, shown by status and ps --json, and a taken
// port fails start (exit 1) with the workspace left halted.
func TestWorkspaceNetworkCLI(t *testing.T) {
	w, ref := vmCLI(t)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	spec := fmt.Sprintf("127.0.0.1:%d:8080", port)
	wantPort := workspace.Port{HostIP: mustAddr("127.0.0.1"), HostPort: port, GuestPort: 8080, Protocol: "tcp"}

	var inf workspace.Info
	out := w.want(t, 0, "", "--json", "create", "web", "--image", ref, "--profile", "tiny", "--disk-size", "256M", "-p", spec)
	if json.Unmarshal([]byte(out), &inf) != nil || inf.Network == nil || len(inf.Network.Publish) != 1 || inf.Network.Publish[0] != wantPort {
		t.Fatalf("create --json: %s", out)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
	serve := func(body string) {
		t.Helper()
		w.want(t, 0, "", "exec", "web", "--", "sh", "-c", "mkdir -p /www && echo "+body+" > /www/x && httpd -p 8080 -h /www")
		testenv.Fetch(t, url, body+"\n")
	}
	w.want(t, 0, "Started web", "start", "web")
	serve("one")
	w.want(t, 0, fmt.Sprintf("user, ports 127.0.0.1:%d->8080/tcp", port), "status", "web")
	var ps []workspace.Info
	if out := w.want(t, 0, "", "--json", "ps"); json.Unmarshal([]byte(out), &ps) != nil || len(ps) != 1 ||
		ps[0].Network == nil || len(ps[0].Network.Publish) != 1 || ps[0].Network.Publish[0] != wantPort {
		t.Fatalf("ps --json: %s", out)
	}
	w.want(t, 0, "Halted web", "halt", "web")

	taken, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	w.want(t, ExitFailure, "already in use", "start", "web")
	taken.Close()
	out = w.want(t, 0, "", "--json", "status", "web")
	if json.Unmarshal([]byte(out), &inf) != nil || inf.State != workspace.Halted {
		t.Fatalf("after the refused start: %s", out)
	}
	w.want(t, 0, "Started web", "start", "web")
	serve("two")
	w.want(t, 0, "Halted web", "halt", "web")
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
