package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/conduit"
	"github.com/microagent-dev/microagent/credswap"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/vmm"
)

// Names of the swap section's HTTPS host: one the swap covers (its TLS
// is terminated and the placeholder swapped), one it does not (TLS end
// to end through the same network).
const (
	swapHost  = "swap.bench.test"
	plainHost = "plain.bench.test"
	// swapRequests is how many small requests each path makes a round.
	swapRequests = 20
)

// swapResult is section 11: HTTPS through the secret swap.
type swapResult struct {
	swapped, plain         []time.Duration // small GETs, each on a new connection
	swappedBig, plainBig   []time.Duration // one download of bigBytes each
	bigBytes               int64
	valuesSeen, valuesWant int64 // requests to the swapped host that carried the real value
}

// swapSection is section 11.
type swapSection struct{}

func (swapSection) name() string { return "swap" }

// run boots one VM whose network swaps a placeholder for a value toward
// one name and relays TLS end to end toward another, both served by the
// same HTTPS server on the host's loopback, and times the guest's own
// requests to each, interleaved round by round (round 0 a warm-up).
func (swapSection) run(ctx context.Context, e *env) error {
	o := e.opts
	ref, err := e.imageWith(ctx, "the guest's HTTPS client", "./bench/netserver", netServerPath, "bench/busybox-net")
	if err != nil {
		return err
	}
	res := &swapResult{bigBytes: int64(o.netMB) << 20}
	const value = "bench-secret-value-0123456789"

	// The "real" host: a CA of the benchmark's own, trusted by the swap
	// through its extra roots and by the guest's client directly.
	caCert, caKey, err := credswap.NewCA()
	if err != nil {
		return err
	}
	ca, err := credswap.LoadCA(caCert, caKey)
	if err != nil {
		return err
	}
	var seen atomic.Int64
	big := make([]byte, 256<<10)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Host != "" && strings.HasPrefix(r.Host, swapHost) && r.Header.Get("Authorization") == "Bearer "+value {
				seen.Add(1)
			}
			if r.URL.Path != "/big" {
				io.WriteString(w, "ok")
				return
			}
			w.Header().Set("Content-Length", strconv.FormatInt(res.bigBytes, 10))
			for left := res.bigBytes; left > 0; {
				k := min(left, int64(len(big)))
				if _, err := w.Write(big[:k]); err != nil {
					return
				}
				left -= k
			}
		}),
		TLSConfig: &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) { return ca.Leaf(h.ServerName) }},
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go srv.ServeTLS(l, "", "")
	defer srv.Close()
	port := l.Addr().(*net.TCPAddr).Port

	dns, err := serveDNS()
	if err != nil {
		return err
	}
	defer dns.Close()

	decls := secrets.Declarations{Secrets: []secrets.Decl{{Name: "BENCH_KEY", Ref: secrets.Ref{Scheme: "env", Ref: "BENCH_KEY"}, EgressHosts: []string{swapHost}}}}
	wsCert, wsKey, err := credswap.NewCA()
	if err != nil {
		return err
	}
	env := func(k string) (string, bool) { return value, k == "BENCH_KEY" }
	sw, phs, err := conduit.NewSwap(decls, wsCert, wsKey, &conduit.SwapSource{Decls: decls, Env: env, Limit: conduit.NewSwapLimiter()})
	if err != nil {
		return err
	}
	sw.ExtraRoots = caCert
	n := &vmm.Network{HostAccess: true, HostPorts: []int{port}, AllowNames: []string{swapHost, plainHost},
		DNSUpstreams: []netip.AddrPort{dns.LocalAddr().(*net.UDPAddr).AddrPort()}, Swap: sw}
	logf("swap: booting the VM with the secret swap toward %s", swapHost)
	vm, _, cleanup, err := bootVM(ctx, e, ref, n)
	if err != nil {
		return fmt.Errorf("swap VM: %w", err)
	}
	defer cleanup()
	roots := append(append([]byte(nil), wsCert...), caCert...)
	if _, err := vm.Client.Exec(ctx, channel.ExecRequest{Argv: []string{"sh", "-c", "cat > /tmp/roots.pem"}, Stdin: true},
		bytes.NewReader(roots), io.Discard, io.Discard); err != nil {
		return fmt.Errorf("swap: the guest's roots: %w", err)
	}
	auth := "Authorization: Bearer " + phs[0].Value
	get := func(host, path string, count int) ([]time.Duration, error) {
		url := fmt.Sprintf("https://%s:%d%s", host, port, path)
		return guestGets(ctx, vm, url, count, auth)
	}
	for i := 0; i <= o.n; i++ {
		logf("swap: %d requests and one %d MiB download each, swapped / end to end, round %d/%d", swapRequests, o.netMB, i, o.n)
		e.r.sampleLoad()
		for _, p := range []struct {
			host       string
			small, big *[]time.Duration
		}{{swapHost, &res.swapped, &res.swappedBig}, {plainHost, &res.plain, &res.plainBig}} {
			small, err := get(p.host, "/small", swapRequests)
			if err != nil {
				return fmt.Errorf("swap: %s: %w", p.host, err)
			}
			bigs, err := get(p.host, "/big", 1)
			if err != nil {
				return fmt.Errorf("swap: %s: %w", p.host, err)
			}
			if i > 0 {
				*p.small = append(*p.small, small...)
				*p.big = append(*p.big, bigs...)
			}
		}
	}
	res.valuesSeen, res.valuesWant = seen.Load(), int64((o.n+1)*(swapRequests+1))
	if res.valuesSeen != res.valuesWant {
		return fmt.Errorf("swap: the host got the value in %d of %d requests to %s", res.valuesSeen, res.valuesWant, swapHost)
	}
	e.r.swap = res
	return nil
}

// guestGets runs the guest's client (netserver https) and returns the
// durations it measured.
func guestGets(ctx context.Context, vm *microvm.VM, url string, count int, header string) ([]time.Duration, error) {
	var stdout, stderr bytes.Buffer
	argv := []string{netServerPath, "https", url, strconv.Itoa(count), "/tmp/roots.pem", header}
	es, err := vm.Client.Exec(ctx, channel.ExecRequest{Argv: argv}, nil, &stdout, &stderr)
	if err != nil {
		return nil, err
	}
	if es.Code != 0 {
		return nil, fmt.Errorf("%s: exit %d: %s", url, es.Code, strings.TrimSpace(stderr.String()))
	}
	var ds []time.Duration
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("%s: output %q", url, line)
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: output %q", url, line)
		}
		ds = append(ds, time.Duration(ns))
	}
	if len(ds) != count {
		return nil, fmt.Errorf("%s: %d durations, want %d", url, len(ds), count)
	}
	return ds, nil
}

// serveDNS answers every A query with 127.0.0.1 on a UDP port of the
// host's loopback: the network's forwarder asks it (DNSUpstreams).
func serveDNS() (net.PacketConn, error) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp, _, err := testenv.AnswerDNS(buf[:k], "", netip.MustParseAddr("127.0.0.1")); err == nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	return pc, nil
}

// Goals of section 11 (issue #13).
const (
	swapLatencyGoal    = 1.5
	swapThroughputGoal = 0.7
)

// summary adds section 11 to the summary table.
func (swapSection) summary(b *report, r *results) {
	s := r.swap
	if s == nil {
		return
	}
	sw, pl := summarize(s.swapped), summarize(s.plain)
	lr := ratio(sw.median, pl.median)
	b.f("| 11. HTTPS request (new connection) through the secret swap vs TLS end to end through the same network, p50 | %s | %s | %s | %s | — | ≤ %.1fx | %s |\n",
		dur(pl.median), dur(sw.median), x(lr), x(ratio(sw.min, pl.min)), swapLatencyGoal, verdict(lr, swapLatencyGoal))
	sb, pb := summarize(s.swappedBig), summarize(s.plainBig)
	tr := ratio(pb.median, sb.median) // throughput ratio: swapped / plain
	met := "**no**"
	if tr >= swapThroughputGoal {
		met = "**yes**"
	}
	b.f("| 11. %d MiB HTTPS download through the swap vs end to end (throughput) | %.0f MB/s | %.0f MB/s | %.2fx | %.2fx | — | ≥ %.1fx | %s |\n",
		s.bigBytes>>20, mbps(s.bigBytes, pb.median), mbps(s.bigBytes, sb.median), tr, ratio(pb.min, sb.min), swapThroughputGoal, met)
}

// report writes section 11.
func (swapSection) report(b *report, r *results) {
	s := r.swap
	if s == nil {
		return
	}
	b.f("## 11. Secret swap (--secret-egress)\n\n")
	b.f("One VM (busybox image plus `bench/netserver`, booted as `runner.Run` boots it) on microagent's network\n")
	b.f("with a secret swap toward `%s`; `%s` is allowed too but not covered, so its TLS goes end to end. Both\n", swapHost, plainHost)
	b.f("names resolve (through the network's resolver and `--dns-upstream`) to one HTTPS server on the host's\n")
	b.f("loopback, reached with host access to its port and verified against a CA of the benchmark's own (the\n")
	b.f("swap's extra roots; the guest's client trusts it and the workspace CA). The guest's Go client\n")
	b.f("(`netserver https`) times each GET from dial to the body's last byte, each on a new connection with\n")
	b.f("`Authorization: Bearer <placeholder>`; the swap resolves the value (an `env:` reference) for every\n")
	b.f("request and the server counted it in %d of %d requests to the swapped name. Interleaved round by round\n", s.valuesSeen, s.valuesWant)
	b.f("(n=%d, after one uncounted round).\n\n", summarize(s.swappedBig).n)
	b.statHeader("Request")
	b.statRow("TLS end to end (no interception)", summarize(s.plain))
	b.statRow("**through the swap** (TLS to the helper, value swapped, TLS to the host)", summarize(s.swapped))
	b.statRow(fmt.Sprintf("%d MiB download, end to end", s.bigBytes>>20), summarize(s.plainBig))
	b.statRow(fmt.Sprintf("**%d MiB download, through the swap**", s.bigBytes>>20), summarize(s.swappedBig))
	sw, pl := summarize(s.swapped), summarize(s.plain)
	sb, pb := summarize(s.swappedBig), summarize(s.plainBig)
	b.f("\nSwap / end to end, request p50: **%s** (goal ≤ %.1fx), p99 %s. Download throughput, swap / end to end:\n",
		x(ratio(sw.median, pl.median)), swapLatencyGoal, x(ratio(sw.p99, pl.p99)))
	b.f("**%.2fx** (goal ≥ %.1fx). A swapped request costs a second TLS handshake (the helper's, with a leaf it\n", ratio(pb.median, sb.median), swapThroughputGoal)
	b.f("mints once per name), an HTTP parse and re-encode in the helper, a round trip to the host process for\n")
	b.f("the value and an audit-free resolution (a workspace also appends an audit record per request).\n\n")
}
