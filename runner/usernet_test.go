package runner

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/microagent-dev/microagent/credswap"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/testenv/vmenv"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/qemu"
	"github.com/microagent-dev/microagent/vmm/usernet"
)

// The default user network's tests. Every host-side dial they allow goes
// to a server on 127.0.0.1; every other destination must be refused by
// the helper's policy before any dial, which the helper's decision log
// (qemu.Options.NetLog) shows.

// decisions collects the helper's decision log.
type decisions struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (d *decisions) Write(b []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.buf.Write(b)
}

// events parses what was logged.
func (d *decisions) events(t *testing.T) []usernet.Event {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	var evs []usernet.Event
	sc := bufio.NewScanner(bytes.NewReader(d.buf.Bytes()))
	for sc.Scan() {
		var ev usernet.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("decision log line %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// dialed lists the host-side addresses the helper dialed.
func dialed(evs []usernet.Event) []netip.AddrPort {
	var out []netip.AddrPort
	for _, ev := range evs {
		if ev.Dialed.IsValid() {
			out = append(out, ev.Dialed)
		}
	}
	return out
}

// loggingBackend is the default QEMU backend with its decisions kept.
func loggingBackend(resolvers ...netip.AddrPort) (*qemu.Backend, *decisions) {
	d := &decisions{}
	return qemu.New(qemu.Options{NetLog: d, Resolvers: resolvers}), d
}

// TestRunDefaultPolicy: without flags the guest reaches no private range,
// no link-local or metadata address, not the host's own address and not
// the host's loopback (at the gateway, or at 127/8 routed through the
// gateway with route_localnet, the attack passt let through); a resolver
// the guest picks in a private range gets nothing either. Each is refused
// by the policy (logged as deny) and nothing is dialed.
func TestRunDefaultPolicy(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	loPort, loHits := countingServer(t, "127.0.0.1:0", "hello-from-loopback")
	host := testenv.HostAddr(t)
	hostPort, hostHits := countingServer(t, host.String()+":0", "hello-from-host-address")

	targets := []string{"10.1.2.3", "172.16.0.1", "192.168.0.1", "100.64.0.1", "169.254.169.254", host.String()}
	var script strings.Builder
	for _, ip := range targets {
		port := 80
		if ip == host.String() {
			port = hostPort
		}
		// nc reports a reset at once; timeout bounds a drop.
		fmt.Fprintf(&script, "timeout 5 nc -w 3 %s %d </dev/null && echo REACHED %s; ", ip, port, ip)
	}
	fmt.Fprintf(&script, "timeout 5 wget -q -O - http://%s:%d/ && echo REACHED gateway; ", vmm.UserAddressing.Gateway, loPort)
	// A resolver of the guest's choosing in a private range (UDP).
	script.WriteString("timeout 5 nslookup probe.test 10.9.9.9 && echo REACHED resolver; ")
	// The route_localnet attack: 127/8 routed out of eth0 via the gateway.
	fmt.Fprintf(&script, "echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet; echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet; "+
		"ip route del local 127.0.0.0/8 dev lo table local; ip route del local 127.0.0.1 dev lo table local; "+
		"ip route add 127.0.0.0/8 via %s dev eth0 && echo ROUTED; ip route get 127.0.0.1; "+
		"timeout 5 wget -q -O - http://127.0.0.1:%d/ && echo REACHED localnet; echo end", vmm.UserAddressing.Gateway, loPort)

	b, log := loggingBackend()
	o := opts(ref, "sh", "-c", script.String())
	o.Timeout = 2 * time.Minute
	o.Backend = b
	r, out, errs, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out, "end\n") || strings.Contains(out, "REACHED") || !strings.Contains(out, "ROUTED") {
		t.Errorf("exit %d, stdout %q, stderr %q", r.Exit.Code, out, errs)
	}
	if loHits.Load() != 0 || hostHits.Load() != 0 {
		t.Errorf("host servers were reached: loopback %d, host address %d", loHits.Load(), hostHits.Load())
	}
	evs := log.events(t)
	if d := dialed(evs); len(d) != 0 {
		t.Errorf("the helper dialed %v", d)
	}
	denied := map[netip.Addr]bool{}
	for _, ev := range evs {
		if ev.Verdict == usernet.Deny {
			denied[ev.Dst.Addr()] = true
		}
	}
	for _, ip := range append(targets, vmm.UserAddressing.Gateway.String(), "10.9.9.9") {
		if !denied[netip.MustParseAddr(ip)] {
			t.Errorf("no deny logged for %s", ip)
		}
	}
	// gVisor may drop 127/8 from the wire before the policy sees it; either
	// way nothing was dialed (checked above).
	t.Logf("127.0.0.1 reached the policy: %v; %d decisions", denied[netip.MustParseAddr("127.0.0.1")], len(evs))
}

// TestRunHostAccessPort: --host-access PORT opens that port of the host's
// loopback and no other.
func TestRunHostAccessPort(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	openPort, openHits := countingServer(t, "127.0.0.1:0", "hello-open")
	shutPort, shutHits := countingServer(t, "127.0.0.1:0", "hello-shut")
	gw := vmm.UserAddressing.Gateway
	script := fmt.Sprintf("wget -q -O - http://%s:%d/; echo; timeout 5 wget -q -O - http://%s:%d/ && echo REACHED; echo end", gw, openPort, gw, shutPort)
	b, log := loggingBackend()
	o := opts(ref, "sh", "-c", script)
	o.Timeout = time.Minute
	o.Backend = b
	o.Network = vmm.Network{HostAccess: true, HostPorts: []int{openPort}}
	r, out, errs, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "hello-open") || strings.Contains(out, "REACHED") || openHits.Load() != 1 || shutHits.Load() != 0 {
		t.Errorf("exit %d, hits %d/%d, stdout %q, stderr %q", r.Exit.Code, openHits.Load(), shutHits.Load(), out, errs)
	}
	want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(openPort))
	evs := log.events(t)
	var opened []netip.AddrPort
	closed := false
	for _, ev := range evs {
		if ev.Closed {
			// The fetch's end: its request out, its answer in.
			closed = closed || ev.Dialed == want && ev.BytesOut > 0 && ev.BytesIn > int64(len("hello-open"))
			continue
		}
		if ev.Dialed.IsValid() {
			opened = append(opened, ev.Dialed)
		}
	}
	if len(opened) != 1 || opened[0] != want || !closed {
		t.Errorf("the helper dialed %v (want only %v), its end logged: %v; log %+v", opened, want, closed, evs)
	}
}

// TestRunNetworkDNS: the network's DNS forwarder at 10.0.2.3 relays UDP
// and TCP queries to its upstream resolver (here a server on 127.0.0.1),
// without host access.
func TestRunNetworkDNS(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	dns := testenv.StartLoopbackDNS(t, "probe.test.", netip.MustParseAddr("192.0.2.77"))
	// A TCP query for probe.test A, written by hand: busybox's nslookup
	// speaks only UDP. Its answer must carry 192.0.2.77 (c0 00 02 4d).
	q := tcpQuery(t, "probe.test.")
	script := fmt.Sprintf("nslookup probe.test; printf '%s' | timeout 10 nc -w 3 %s 53 > /tmp/r; od -An -tx1 /tmp/r | tr -d ' \\n'; echo; echo end",
		octal(q), vmm.UserAddressing.DNS)
	b, log := loggingBackend(dns.Addr)
	o := opts(ref, "sh", "-c", script)
	o.Timeout = time.Minute
	o.Backend = b
	r, out, errs, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "192.0.2.77") || dns.UDP.Load() == 0 {
		t.Errorf("UDP: %d queries, exit %d, stdout %q, stderr %q", dns.UDP.Load(), r.Exit.Code, out, errs)
	}
	if !strings.Contains(out, "c000024d") || dns.TCP.Load() != 1 {
		t.Errorf("TCP: %d queries, stdout %q, stderr %q", dns.TCP.Load(), out, errs)
	}
	protos := map[string]bool{}
	for _, ev := range log.events(t) {
		protos[ev.Proto] = ev.Verdict == usernet.Allow
	}
	if !protos["dns-udp"] || !protos["dns-tcp"] {
		t.Errorf("DNS decisions logged: %v", protos)
	}
}

// tcpQuery is an A query for name in DNS-over-TCP framing.
func tcpQuery(t *testing.T, name string) []byte {
	t.Helper()
	bld := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x1234, RecursionDesired: true})
	bld.StartQuestions()
	bld.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	msg, err := bld.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...)
}

// TestRunEgressAllowlist: with --egress-allow only the allowed name leads
// out: the network's resolver answers it with a stand-in address that the
// helper maps to the real one (here 127.0.0.1, opened with --host-access
// PORT), refuses other names without asking upstream, and refuses the IP
// literal of a public address, a resolver of the guest's choosing and a
// stand-in it never handed out, before any dial.
func TestRunEgressAllowlist(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	port, hits := countingServer(t, "127.0.0.1:0", "hello-allowed")
	dns := testenv.StartLoopbackDNS(t, "", netip.MustParseAddr("127.0.0.1"))
	script := fmt.Sprintf("wget -q -O - http://allowed.test:%d/; echo; "+
		"nslookup other.test; timeout 5 wget -q -O - http://other.test:%d/ && echo REACHED other; "+
		"timeout 5 nc -w 3 203.0.113.7 443 </dev/null && echo REACHED literal; "+
		"timeout 5 nslookup allowed.test 203.0.113.53 && echo REACHED resolver; "+
		"timeout 5 nc -w 3 198.18.200.1 %d </dev/null && echo REACHED stand-in; "+
		// Domain fronting through the allowed name's server: another
		// name in the HTTP Host, then in a TLS server name.
		"timeout 5 wget -q -O - --header 'Host: evil.test' http://allowed.test:%d/ && echo REACHED fronted-http; "+
		"printf '%s' | timeout 5 nc -w 3 allowed.test %d > /tmp/tls; echo end", port, port, port, port, octal(tlsHello(t, "evil.test")), port)
	b, log := loggingBackend(dns.Addr)
	o := opts(ref, "sh", "-c", script)
	o.Timeout = 2 * time.Minute
	o.Backend = b
	o.Network = vmm.Network{HostAccess: true, HostPorts: []int{port}, AllowNames: []string{"allowed.test"}}
	r, out, errs, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "hello-allowed") || hits.Load() != 1 || strings.Contains(out, "REACHED") || !strings.HasSuffix(out, "end\n") {
		t.Errorf("exit %d, %d hits, stdout %q, stderr %q", r.Exit.Code, hits.Load(), out, errs)
	}
	if !strings.Contains(out+errs, "REFUSED") {
		t.Errorf("other.test was not REFUSED: stdout %q, stderr %q", out, errs)
	}
	if got := dns.Names(); len(got) == 0 || slices.ContainsFunc(got, func(n string) bool { return n != "allowed.test." }) {
		t.Errorf("upstream was asked %v, want allowed.test only", got)
	}
	evs := log.events(t)
	want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	for _, d := range dialed(evs) {
		if d != want && d != dns.Addr {
			t.Errorf("the helper dialed %v", d)
		}
	}
	denied := map[netip.Addr]bool{}
	for _, ev := range evs {
		if ev.Verdict == usernet.Deny {
			denied[ev.Dst.Addr()] = true
		}
	}
	for _, ip := range []string{"203.0.113.7", "203.0.113.53", "198.18.200.1"} {
		if !denied[netip.MustParseAddr(ip)] {
			t.Errorf("no deny logged for %s", ip)
		}
	}
	fronted := 0
	for _, ev := range evs {
		if ev.Verdict == usernet.Deny && ev.Name == "evil.test" {
			fronted++
		}
	}
	if fronted != 2 {
		t.Errorf("%d fronting attempts denied, want 2 (HTTP Host, TLS server name)", fronted)
	}
}

// tlsHello is a TLS client's first flight for serverName.
func tlsHello(t *testing.T, serverName string) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		tls.Client(c, &tls.Config{ServerName: serverName}).Handshake()
		c.Close()
	}()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [5]byte
	if _, err := io.ReadFull(s, hdr[:]); err != nil {
		t.Fatal(err)
	}
	rec := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(s, rec); err != nil {
		t.Fatal(err)
	}
	return append(hdr[:], rec...)
}

// octal renders b for the shell's printf.
func octal(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		fmt.Fprintf(&s, "\\%03o", c)
	}
	return s.String()
}

// TestRunNetworkHelperDies: a one-shot run whose network helper is killed
// mid-command stops at once with ErrNetworkLost instead of running on
// offline until its command ends.
func TestRunNetworkHelperDies(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushBusybox(t, "busybox")
	o := opts(ref, "sh", "-c", "echo up; sleep 300")
	o.Agent = vmenv.Agent(t)
	o.Backend = qemu.New(qemu.Options{})
	up := make(chan struct{})
	o.Stdout = &signalWriter{match: "up", seen: up}
	o.Stderr = io.Discard
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { _, err := Run(ctx, e.h, o); done <- err }()
	select {
	case <-up:
	case err := <-done:
		t.Fatalf("the run ended before its command printed: %v", err)
	}
	helper := 0
	for _, p := range testenv.Processes() {
		if p.PPID == os.Getpid() && p.Comm == usernet.BinaryName {
			helper = p.PID
		}
	}
	if helper == 0 {
		t.Fatal("no network helper among this test's children")
	}
	if err := syscall.Kill(helper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if !errors.Is(err, ErrNetworkLost) || !strings.Contains(err.Error(), "the command was stopped") {
		t.Fatalf("after the helper was killed (%s in): %v", time.Since(start).Round(time.Second), err)
	}
	e.assertClean(t)
}

// signalWriter closes seen once what was written contains match.
type signalWriter struct {
	mu    sync.Mutex
	buf   []byte
	match string
	seen  chan struct{}
}

func (w *signalWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen == nil {
		return len(b), nil
	}
	w.buf = append(w.buf, b...)
	if strings.Contains(string(w.buf), w.match) {
		close(w.seen)
		w.seen = nil
	}
	return len(b), nil
}

// TestRunSecretEgress: a one-shot run swaps a --secret-egress placeholder
// for its value toward its host (with a CA of the run's own, which the
// guest trusts through SSL_CERT_FILE), and the guest only ever sees the
// placeholder.
func TestRunSecretEgress(t *testing.T) {
	e := setup(t)
	ref := e.reg.PushImage(t, "clients", testenv.HTTPSClientsImage(t))
	got := make(chan string, 1)
	srv, caCert := testenv.StartTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Authorization")
		io.WriteString(w, "ok")
	}))
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, caCert, 0o600)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	dns := testenv.StartLoopbackDNS(t, "", netip.MustParseAddr("127.0.0.1"))
	const value = "run-egress-value-0123456789abcdef"
	t.Setenv("RUN_EGRESS_KEY", value)
	var d secrets.Declarations
	if err := d.Add(secrets.Decl{Name: "KEY", Ref: secrets.Ref{Scheme: "env", Ref: "RUN_EGRESS_KEY"}, EgressHosts: []string{"api.test"}}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddEgressRoot(caFile); err != nil {
		t.Fatal(err)
	}
	o := opts(ref, "sh", "-c", fmt.Sprintf(`echo $KEY; curl -sS https://api.test:%d/ -H "Authorization: Bearer $KEY"`, port))
	o.Secrets = d
	o.Timeout = 2 * time.Minute
	o.Network = vmm.Network{HostAccess: true, HostPorts: []int{port}, EgressNone: true, DNSUpstreams: []netip.AddrPort{dns.Addr}}
	r, out, errs, err := e.run(t, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	ph, _, _ := strings.Cut(out, "\n")
	if r.Exit.Code != 0 || !credswap.ValidPlaceholder(ph) || !strings.HasSuffix(out, "ok") || strings.Contains(out+errs, value) {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.Exit.Code, out, errs)
	}
	if auth := <-got; auth != "Bearer "+value {
		t.Fatalf("the server got %q", auth)
	}
}
