package workspace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/usernet"
)

// Network tests boot real VMs; all their traffic stays on this machine
// (the host's loopback and the VM's NAT).

// TestWorkspacePublishedPort: a port published at create is reached from
// the host after start, again after halt and start; status shows it; a
// port taken on the host refuses the start before anything boots.
func TestWorkspacePublishedPort(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)
	port := testenv.MustFreePort(t)
	fw := vmm.Forward{HostIP: vmm.DefaultPublishIP, HostPort: port, GuestPort: 8080}
	inf, err := Create(ctx, e.h, CreateOptions{Name: "web", Image: e.ref, Agent: e.agent, Profile: "tiny",
		Resources: Resources{DiskBytes: 256 << 20}, Network: vmm.Network{Forwards: []vmm.Forward{fw}}})
	if err != nil {
		t.Fatal(err)
	}
	wantNet := NetworkConfig{Mode: vmm.NetworkUser, Publish: []Port{{HostIP: vmm.DefaultPublishIP, HostPort: port, GuestPort: 8080, Protocol: "tcp"}}}
	if got, _ := json.Marshal(inf.Network); string(got) != string(must(json.Marshal(wantNet))) {
		t.Fatalf("created: network %s, want %s", got, must(json.Marshal(wantNet)))
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
	serve := func(body string) {
		t.Helper()
		// httpd daemonizes: the exec returns, the server stays.
		if code, out, errs := e.exec(t, "web", "", "sh", "-c", "mkdir -p /www && echo "+body+" > /www/x && httpd -p 8080 -h /www"); code != 0 {
			t.Fatalf("start httpd: %d %q %q", code, out, errs)
		}
	}

	e.start(t, "web")
	serve("first")
	t.Logf("first page after %s", testenv.Fetch(t, url, "first\n"))
	if inf := e.status(t, "web"); inf.Network == nil || len(inf.Network.Publish) != 1 || inf.Network.Publish[0].HostPort != port {
		t.Fatalf("status: network %+v", inf.Network)
	}
	if _, err := Halt(ctx, e.h, HaltOptions{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	// The port is free again once the workspace is halted.
	if l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		t.Fatalf("port still held after halt: %v", err)
	} else {
		l.Close()
	}
	e.start(t, "web")
	serve("second")
	t.Logf("second page after %s", testenv.Fetch(t, url, "second\n"))
	if _, err := Halt(ctx, e.h, HaltOptions{Name: "web"}); err != nil {
		t.Fatal(err)
	}

	// Someone else takes the port: the start is refused before boot and
	// the workspace stays halted, with nothing running.
	l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	before := e.record(t, "web")
	_, err = Start(ctx, e.h, StartOptions{Name: "web", Executable: e.exe, Agent: e.agent})
	if err == nil || !strings.Contains(err.Error(), "already in use") || !strings.Contains(err.Error(), fmt.Sprint(port)) {
		t.Fatalf("start with the port taken: %v", err)
	}
	after := e.record(t, "web")
	if after.State != Halted || after.Boot != before.Boot {
		t.Fatalf("refused start changed the record: %+v -> %+v", before, after)
	}
	e.assertAtRest(t, "web", Halted)
}

// TestWorkspaceIsolated: an isolated workspace has only lo.
func TestWorkspaceIsolated(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)
	if _, err := Create(ctx, e.h, CreateOptions{Name: "iso", Image: e.ref, Agent: e.agent, Profile: "tiny",
		Resources: Resources{DiskBytes: 256 << 20}, Network: vmm.Network{Mode: vmm.NetworkIsolated}}); err != nil {
		t.Fatal(err)
	}
	e.start(t, "iso")
	if code, out, errs := e.exec(t, "iso", "", "ls", "/sys/class/net"); code != 0 || strings.Fields(out)[0] != "lo" || len(strings.Fields(out)) != 1 {
		t.Fatalf("isolated: interfaces %q (%d %q)", out, code, errs)
	}
	if inf := e.status(t, "iso"); inf.Network == nil || inf.Network.Mode != vmm.NetworkIsolated {
		t.Fatalf("status: network %+v", inf.Network)
	}
}

// TestWorkspaceDNS resolves a name inside the guest against a DNS server
// the test runs on the host's loopback (reached at the NAT's gateway,
// which host access maps to the host's 127.0.0.1): the guest's
// resolv.conf names it through --dns. Nothing leaves this machine.
func TestWorkspaceDNS(t *testing.T) {
	srv := testenv.StartDNS(t, netip.MustParseAddr("127.0.0.1"), "probe.microagent.test.", netip.MustParseAddr("192.0.2.77"))
	e := setup(t)
	ctx := testCtx(t)
	if _, err := Create(ctx, e.h, CreateOptions{Name: "dns", Image: e.ref, Agent: e.agent, Profile: "tiny",
		Resources: Resources{DiskBytes: 256 << 20},
		Network:   vmm.Network{HostAccess: true, DNS: []netip.Addr{vmm.UserAddressing.Gateway}}}); err != nil {
		t.Fatal(err)
	}
	e.start(t, "dns")
	code, out, errs := e.exec(t, "dns", "", "sh", "-c", "cat /etc/resolv.conf; nslookup probe.microagent.test")
	if code != 0 || !strings.Contains(out, "nameserver 10.0.2.2") || !strings.Contains(out, "192.0.2.77") {
		t.Fatalf("nslookup: %d %q %q", code, out, errs)
	}
	if srv.Queries.Load() == 0 {
		t.Fatal("the host's DNS server saw no query")
	}
	// A name it does not know is not found (and is not resolved elsewhere).
	if code, out, _ := e.exec(t, "dns", "", "nslookup", "other.microagent.test"); code == 0 || strings.Contains(out, "192.0.2.77") {
		t.Fatalf("nslookup of an unknown name: %d %q", code, out)
	}
}

// TestCreateBadNetwork: a network that can never work is refused before
// anything is pulled (the image does not even exist) and nothing is
// created.
func TestCreateBadNetwork(t *testing.T) {
	h := home.Home{Root: t.TempDir()}
	fw := vmm.Forward{HostIP: vmm.DefaultPublishIP, HostPort: 18080, GuestPort: 80}
	for name, n := range map[string]vmm.Network{
		"isolated publish": {Mode: vmm.NetworkIsolated, Forwards: []vmm.Forward{fw}},
		"isolated access":  {Mode: vmm.NetworkIsolated, HostAccess: true},
		"twice":            {Forwards: []vmm.Forward{fw, fw}},
		"bad port":         {Forwards: []vmm.Forward{{HostIP: vmm.DefaultPublishIP, HostPort: 70000, GuestPort: 80}}},
		"unknown mode":     {Mode: "bridge"},
		"dns no access":    {DNS: []netip.Addr{vmm.UserAddressing.Gateway}},
	} {
		_, err := Create(context.Background(), h, CreateOptions{Name: "x", Image: "127.0.0.1:1/none:latest", Network: n})
		if !errors.Is(err, ErrNetwork) {
			t.Errorf("%s: %v, want ErrNetwork", name, err)
		}
	}
	if ents, _ := os.ReadDir(h.Path(Dir)); len(ents) != 0 {
		t.Fatalf("a refused create left %d entries", len(ents))
	}
}

// TestManifestNetworkDefault: a manifest from before networking (no
// network declaration) means user mode, no ports, no host access; a
// stored network reads back as written.
func TestManifestNetworkDefault(t *testing.T) {
	m := &Manifest{Version: 1, Name: "old"}
	c, err := m.Network()
	if err != nil || c.Mode != vmm.NetworkUser || len(c.Publish) != 0 || c.HostAccess || len(c.DNS) != 0 {
		t.Fatalf("old manifest: %+v %v", c, err)
	}
	n := vmm.Network{Forwards: []vmm.Forward{{HostIP: netip.MustParseAddr("127.0.0.2"), HostPort: 8080, GuestPort: 80}},
		HostAccess: true, HostPorts: []int{53, 11434}, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")},
		AllowNames: []string{"pypi.org", ".github.com"}, DNS: []netip.Addr{vmm.UserAddressing.Gateway}}
	if err := m.SetNetwork(NewNetworkConfig(n)); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back Manifest
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	c, err = back.Network()
	if err != nil {
		t.Fatal(err)
	}
	got := c.VMM()
	if got.Mode != vmm.NetworkUser || !got.HostAccess || len(got.Forwards) != 1 || got.Forwards[0] != n.Forwards[0] || got.DNS[0] != n.DNS[0] ||
		!slices.Equal(got.HostPorts, n.HostPorts) || !slices.Equal(got.AllowCIDRs, n.AllowCIDRs) || !slices.Equal(got.AllowNames, n.AllowNames) {
		t.Fatalf("round trip: %+v from %s", got, b)
	}
	// A corrupt or invalid stored network is refused with a way out.
	for _, raw := range []string{`{"mode":1}`, `{"mode":"isolated","hostAccess":true}`, `{"mode":"user","publish":[{"hostIP":"127.0.0.1","hostPort":1,"guestPort":2,"protocol":"udp"}]}`} {
		m.Declarations["network"] = json.RawMessage(raw)
		if _, err := m.Network(); err == nil || !strings.Contains(err.Error(), "workspace old") {
			t.Errorf("%s: %v", raw, err)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestWorkspaceNetworkHelperDies (#12): a running workspace whose network
// helper is killed is not left "running" and silently offline: the
// supervisor stops the VM and records the workspace failed, saying why.
func TestWorkspaceNetworkHelperDies(t *testing.T) {
	e := setup(t)
	e.create(t, "nh")
	inf := e.start(t, "nh")
	helper := childNamed(t, inf.SupervisorPID, usernet.BinaryName)
	if err := syscall.Kill(helper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		inf = e.status(t, "nh")
		if !inf.State.Live() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a minute after the network helper was killed the workspace is %s (%s)", inf.State, inf.Reason)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if inf.State != Failed || !strings.Contains(inf.Reason, "network helper died") {
		t.Fatalf("after the network helper died: %s (%s)", inf.State, inf.Reason)
	}
	// The supervisor exits just after it recorded the end.
	for end := time.Now().Add(15 * time.Second); len(e.procs()) > 0 && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	e.assertNoProcs(t)
	// It starts again, with a new helper.
	e.start(t, "nh")
	if code, _, _ := e.exec(t, "nh", "", "true"); code != 0 {
		t.Fatalf("exec after the restart: %d", code)
	}
}

// childNamed is the pid of parent's child whose command name is comm.
func childNamed(t *testing.T, parent int, comm string) int {
	t.Helper()
	for _, p := range testenv.Processes() {
		if p.PPID == parent && p.Comm == comm {
			return p.PID
		}
	}
	t.Fatalf("no child %q of process %d", comm, parent)
	return 0
}
