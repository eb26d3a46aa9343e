package runner

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

// Network tests boot real VMs; all their traffic stays on this machine
// (the host's loopback and the VM's NAT).

func TestRunPublishedPort(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	port := testenv.MustFreePort(t)
	o := opts(ref, "sh", "-c", "mkdir -p /www && echo hi-from-guest > /www/x && exec httpd -f -p 8080 -h /www")
	o.Network = vmm.Network{Forwards: []vmm.Forward{{HostIP: vmm.DefaultPublishIP, HostPort: port, GuestPort: 8080}}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type ended struct {
		r   *Result
		err error
	}
	done := make(chan ended, 1)
	go func() {
		r, _, _, err := e.run(t, ctx, o)
		done <- ended{r, err}
	}()

	url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
	// Each request on a new connection, as curl does, so every one crosses
	// the NAT afresh.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() (string, error) {
		resp, err := client.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("status %s", resp.Status)
		}
		return string(b), err
	}
	// The NAT accepts host connections before the guest's server listens
	// (they are then reset), so poll until the page comes back, bounded.
	start := time.Now()
	var body string
	var err error
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case end := <-done:
			t.Fatalf("run ended before the page was fetched: %+v", end)
		default:
		}
		if body, err = get(); err == nil {
			break
		}
	}
	if err != nil || body != "hi-from-guest\n" {
		t.Fatalf("GET %s: %q, %v", url, body, err)
	}
	t.Logf("first page %s after start (boot included)", time.Since(start).Round(time.Millisecond))
	const n = 50
	start = time.Now()
	for i := 0; i < n; i++ {
		if body, err := get(); err != nil || body != "hi-from-guest\n" {
			t.Fatalf("request %d: %q, %v", i, body, err)
		}
	}
	t.Logf("%d sequential requests through the published port: %s, %s each", n,
		time.Since(start).Round(time.Millisecond), (time.Since(start) / n).Round(100*time.Microsecond))
	cancel()
	select {
	case end := <-done:
		// The host closes the process's stream; the agent may still report
		// the kill before the stream goes.
		if end.err == nil && end.r.Exit.Signal == 0 {
			t.Errorf("cancelled run: %+v, %v; want an error or a killed server", end.r, end.err)
		}
		t.Logf("cancelled run ended: %+v, %v", end.r, end.err)
	case <-time.After(30 * time.Second):
		t.Fatal("the run did not end after cancellation")
	}
}

func TestRunHostAccess(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "hello-from-host")
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	// No wget -T: it segfaults in this busybox (1.35); the run's Timeout
	// bounds the fetch instead.
	// busybox timeout bounds the blocked fetch (slirp and the default
	// network refuse it at once; passt had nothing answer there).
	script := fmt.Sprintf("cat /etc/resolv.conf /etc/hosts; timeout 5 wget -q -O - http://10.0.2.2:%d/", port)
	userNet := qemu.New(qemu.Options{}).UserNetwork()
	t.Logf("user network: %s", userNet.Provider)

	// With host access: the guest reaches the host's loopback server.
	o := opts(ref, "sh", "-c", script)
	o.Hostname = "netbox"
	o.Timeout = time.Minute
	o.Network = vmm.Network{HostAccess: true}
	r, out, errs, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Exit.Code != 0 || !strings.HasSuffix(out, "hello-from-host") || hits.Load() != 1 {
		t.Fatalf("host access: exit %d, %d hits, stdout %q, stderr %q", r.Exit.Code, hits.Load(), out, errs)
	}
	for _, want := range []string{"\nnameserver 10.0.2.3\n", "127.0.0.1\tlocalhost\n", "::1\tlocalhost ip6-localhost", "10.0.2.15\tnetbox\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest files lack %q:\n%s", want, out)
		}
	}

	// Without it (the default): refused at once, and the server sees nothing.
	o.Network = vmm.Network{}
	start := time.Now()
	r, out, errs, err = e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Exit.Code == 0 || strings.Contains(out, "hello-from-host") || hits.Load() != 1 {
		t.Fatalf("no host access: exit %d, %d hits, stdout %q, stderr %q", r.Exit.Code, hits.Load(), out, errs)
	}
	// The default network's DNS forwarder answers without host access;
	// slirp's does not.
	if got := strings.Contains(out, "nameserver 10.0.2.3"); got != userNet.Outbound {
		t.Errorf("%s: resolv.conf names 10.0.2.3: %v, want %v:\n%s", userNet.Provider, got, userNet.Outbound, out)
	}
	t.Logf("blocked run (boot and refused wget): %s; wget said %q", time.Since(start).Round(time.Millisecond), strings.TrimSpace(errs))
}

func TestRunIsolatedNetwork(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	o := opts(ref, "sh", "-c", "cat /proc/net/dev; ls /sys/class/net; cat /etc/hosts")
	o.Hostname = "solo"
	o.Network = vmm.Network{Mode: vmm.NetworkIsolated}
	r, out, errs, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Exit.Code != 0 {
		t.Fatalf("exit %d: %s", r.Exit.Code, errs)
	}
	var ifaces []string
	for _, line := range strings.Split(out, "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok && !strings.Contains(name, "|") && !strings.Contains(line, "\t") {
			ifaces = append(ifaces, strings.TrimSpace(name))
		}
	}
	if len(ifaces) != 1 || ifaces[0] != "lo" || !strings.Contains(out, "\nlo\n") || strings.Contains(out, "eth0") {
		t.Errorf("isolated guest interfaces %q:\n%s", ifaces, out)
	}
	if !strings.Contains(out, "127.0.1.1\tsolo\n") {
		t.Errorf("/etc/hosts lacks the hostname:\n%s", out)
	}
}

// countingBackend records whether a VM was started.
type countingBackend struct {
	vmm.Backend
	starts atomic.Int32
}

func (b *countingBackend) Start(ctx context.Context, cfg vmm.Config) (vmm.Machine, error) {
	b.starts.Add(1)
	return b.Backend.Start(ctx, cfg)
}

func TestRunNetworkBadInputs(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	fw := func(ip string, port int) vmm.Forward {
		return vmm.Forward{HostIP: netip.MustParseAddr(ip), HostPort: port, GuestPort: 80}
	}
	for name, c := range map[string]struct {
		n    vmm.Network
		want string
	}{
		"taken port":           {vmm.Network{Forwards: []vmm.Forward{fw("127.0.0.1", port)}}, "already in use"},
		"isolated publish":     {vmm.Network{Mode: vmm.NetworkIsolated, Forwards: []vmm.Forward{fw("127.0.0.1", testenv.MustFreePort(t))}}, "isolated network has no network device"},
		"isolated host access": {vmm.Network{Mode: vmm.NetworkIsolated, HostAccess: true}, "isolated network has none"},
		"twice":                {vmm.Network{Forwards: []vmm.Forward{fw("127.0.0.1", 18080), fw("127.0.0.2", 18080)}}, "published twice"},
		"foreign address":      {vmm.Network{Forwards: []vmm.Forward{fw("192.0.2.1", testenv.MustFreePort(t))}}, "not an address of this host"},
		"bad mode":             {vmm.Network{Mode: "bridge"}, "unknown network mode"},
	} {
		b := &countingBackend{Backend: qemu.New(qemu.Options{})}
		o := opts(ref, "true")
		o.Backend = b
		o.Network = c.n
		_, _, _, err := e.run(t, nil, o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, c.want)
		}
		if b.starts.Load() != 0 {
			t.Errorf("%s: a VM was started", name)
		}
	}
}
