package runner

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/passt"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

// countingServer serves body on addr (port 0: any) and counts requests.
func countingServer(t *testing.T, addr, body string) (port int, hits *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	hits = new(atomic.Int32)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, body)
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return l.Addr().(*net.TCPAddr).Port, hits
}

// passtChildren lists the passt processes this test process started.
func passtChildren() []int {
	var pids []int
	for _, p := range testenv.Processes() {
		if p.PPID == os.Getpid() && strings.HasPrefix(p.Comm, "passt") {
			pids = append(pids, p.PID)
		}
	}
	return pids
}

// TestRunPasstNetwork: passt (no longer the default user network, kept as
// the benchmark's floor and chosen here) reaches a server on the host's own
// (non-loopback) address and a DNS server there given with --dns, but not
// a server bound to the host's 127.0.0.1; passt is gone when the run
// returns. The default network refuses the host's own address
// (TestRunDefaultPolicy).
func TestRunPasstNetwork(t *testing.T) {
	testenv.RequireTool(t, passt.DefaultBinary)
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	host := testenv.HostAddr(t)
	outPort, outHits := countingServer(t, host.String()+":0", "hello-from-outside")
	loPort, loHits := countingServer(t, "127.0.0.1:0", "hello-from-loopback")
	dns := testenv.StartDNS(t, host, "probe.microagent.test.", netip.MustParseAddr("192.0.2.77"))

	// busybox timeout bounds the loopback fetch: without host access the
	// gateway is not the host, and nothing answers there.
	script := fmt.Sprintf("cat /etc/resolv.conf; wget -q -O - http://%s:%d/; echo; nslookup probe.microagent.test; "+
		"timeout 3 wget -q -O - http://%s:%d/ && echo LOOPBACK-REACHED; echo end", host, outPort, vmm.UserAddressing.Gateway, loPort)
	o := opts(ref, "sh", "-c", script)
	o.Timeout = time.Minute
	o.Network = vmm.Network{DNS: []netip.Addr{host}}
	o.Backend = qemu.New(qemu.Options{UserNet: qemu.UserNetPasst})
	start := time.Now()
	r, out, errs, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("run: %s", time.Since(start).Round(time.Millisecond))
	if r.Exit.Code != 0 || !strings.HasSuffix(out, "end\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.Exit.Code, out, errs)
	}
	if !strings.Contains(out, "hello-from-outside") || outHits.Load() != 1 {
		t.Errorf("outbound fetch: %d hits, stdout %q, stderr %q", outHits.Load(), out, errs)
	}
	if !strings.Contains(out, "nameserver "+host.String()) || !strings.Contains(out, "192.0.2.77") || dns.Queries.Load() == 0 {
		t.Errorf("DNS through passt: %d queries, stdout %q, stderr %q", dns.Queries.Load(), out, errs)
	}
	if strings.Contains(out, "LOOPBACK-REACHED") || strings.Contains(out, "hello-from-loopback") || loHits.Load() != 0 {
		t.Errorf("the host's loopback was reachable without host access: %d hits, stdout %q", loHits.Load(), out)
	}
	if pids := passtChildren(); len(pids) != 0 {
		t.Errorf("passt left running after the run: %v", pids)
	}
}

// TestRunSlirpFallback: with slirp (chosen here) the user network has
// restrict=on: nothing outside is reachable, no nameserver is
// named, and a DNS server without host access is refused before boot.
func TestRunSlirpFallback(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	host := testenv.HostAddr(t)
	outPort, outHits := countingServer(t, host.String()+":0", "hello-from-outside")
	b := &countingBackend{Backend: qemu.New(qemu.Options{UserNet: qemu.UserNetSlirp})}
	o := opts(ref, "true")
	o.Backend = b
	o.Network = vmm.Network{DNS: []netip.Addr{host}}
	if _, _, _, err := e.run(t, nil, o); err == nil || !strings.Contains(err.Error(), "add --host-access") || b.starts.Load() != 0 {
		t.Errorf("DNS server on slirp without host access: %v (%d VMs started)", err, b.starts.Load())
	}

	o = opts(ref, "sh", "-c", fmt.Sprintf("cat /etc/resolv.conf; timeout 3 wget -q -O - http://%s:%d/", host, outPort))
	o.Timeout = time.Minute
	o.Backend = qemu.New(qemu.Options{UserNet: qemu.UserNetSlirp})
	r, out, errs, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Exit.Code == 0 || strings.Contains(out, "hello-from-outside") || outHits.Load() != 0 {
		t.Errorf("slirp reached outside: exit %d, %d hits, stdout %q, stderr %q", r.Exit.Code, outHits.Load(), out, errs)
	}
	if strings.Contains(out, "nameserver") {
		t.Errorf("resolv.conf names a server slirp cannot reach:\n%s", out)
	}
}
