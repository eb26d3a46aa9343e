package passt

import (
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/vmm"
)

func TestArgs(t *testing.T) {
	got := Args(&vmm.Network{Forwards: []vmm.Forward{
		{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 18080, GuestPort: 80},
	}}, 3)
	want := []string{"--foreground", "--quiet", "--ipv4-only", "--fd", "3", "--address", "10.0.2.15", "--netmask", "24",
		"--gateway", "10.0.2.2", "--dns-forward", "10.0.2.3", "--no-map-gw", "--tcp-ports", "127.0.0.1/18080:80"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("default:\n got %q\nwant %q", got, want)
	}
	got = Args(&vmm.Network{HostAccess: true}, 5)
	if strings.Contains(strings.Join(got, " "), "--no-map-gw") || got[4] != "5" {
		t.Errorf("host access: %q", got)
	}
}

// TestStartReadyAndExit: Start returns once passt answers (its published
// port is then bound), and passt quits by itself when the VMM's end of
// the socket closes.
func TestStartReadyAndExit(t *testing.T) {
	testenv.RequireTool(t, DefaultBinary)
	l, _ := net.Listen("tcp4", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	start := time.Now()
	p, f, err := Start(Config{Network: &vmm.Network{Forwards: []vmm.Forward{
		{HostIP: vmm.DefaultPublishIP, HostPort: port, GuestPort: 80}}}, DieWithParent: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("passt ready after %v", time.Since(start).Round(100*time.Microsecond))
	if _, err := net.Listen("tcp4", l.Addr().String()); err == nil {
		t.Error("the published port is not bound once Start returned")
	}
	start = time.Now()
	f.Close()
	select {
	case <-p.Done():
		t.Logf("passt exited %v after the socket closed: %v", time.Since(start).Round(100*time.Microsecond), p.Wait())
	case <-time.After(5 * time.Second):
		p.Kill()
		t.Fatal("passt still runs after its peer closed the socket")
	}
}

// TestStartFails: a published port that is taken makes Start fail with
// passt's own reason, and nothing is left running.
func TestStartFails(t *testing.T) {
	testenv.RequireTool(t, DefaultBinary)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	_, _, err = Start(Config{Network: &vmm.Network{Forwards: []vmm.Forward{
		{HostIP: vmm.DefaultPublishIP, HostPort: port, GuestPort: 80}}}})
	if err == nil || !strings.Contains(err.Error(), "bind") {
		t.Fatalf("taken port: got %v, want passt's bind error", err)
	}
	t.Log(err)
	if _, _, err := Start(Config{Binary: "/nonexistent/passt", Network: &vmm.Network{}}); err == nil || !strings.Contains(err.Error(), InstallHint) {
		t.Errorf("missing binary: %v", err)
	}
	if _, _, err := Start(Config{Network: &vmm.Network{Mode: vmm.NetworkIsolated}}); err == nil {
		t.Error("isolated network: no error")
	}
}
