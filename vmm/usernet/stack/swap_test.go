package stack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/credswap"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/usernet"
	"github.com/microagent-dev/microagent/vmm/usernet/intercept"
)

type oneValue struct{ v string }

func (s oneValue) Value(context.Context, vmm.SwapRequest) ([]byte, error) { return []byte(s.v), nil }

// pair is a connected loopback TCP pair: the guest's end and the network's.
func pair(t *testing.T) (guest, network net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	guest, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	network, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { guest.Close(); network.Close() })
	return guest, network
}

// TestRelaySwap runs relaySwap's three ways on real connections: TLS to a
// covered host is intercepted (the host gets the value), a placeholder in
// plain http is flagged and relayed unchanged, and TLS to another host is
// relayed end to end.
func TestRelaySwap(t *testing.T) {
	var mu sync.Mutex
	var got []string
	api := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	api.StartTLS()
	defer api.Close()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
	}))
	defer plain.Close()

	boot := make([]byte, 32)
	rand.Read(boot)
	ph := credswap.Placeholder("K", boot)
	certPEM, keyPEM, err := credswap.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	events := &eventLog{enc: json.NewEncoder(&log)}
	swap, err := newSwap(&usernet.SwapConfig{
		Rules:  []intercept.Rule{{Name: "K", Placeholder: ph, Hosts: []string{"api.example.com"}}},
		CACert: certPEM, CAKey: keyPEM,
		ExtraRoots: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}),
	}, oneValue{"the-value"}, events)
	if err != nil {
		t.Fatal(err)
	}
	n := &Network{events: events, swap: swap, dial: func(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr.String())
	}}
	// through sends one request from the guest's end through relaySwap to
	// the server at addr; a guest that resolved name and is slow to speak
	// first waits delay.
	var name string
	var delay time.Duration
	through := func(addr, url string, cfg *tls.Config) (*http.Response, error) {
		guest, network := pair(t)
		d := usernet.Decision{Verdict: usernet.Allow, Dial: netip.MustParseAddrPort(addr), Name: name}
		upstream, err := n.dial(context.Background(), "tcp", d.Dial)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			n.relaySwap(network, upstream, d, usernet.Event{Proto: "tcp", Dst: d.Dial})
			network.Close()
			upstream.Close()
		}()
		tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
			time.Sleep(delay)
			return guest, nil
		}, TLSClientConfig: cfg, DisableKeepAlives: true}
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+ph)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		guest.Close()
		<-done
		return resp, err
	}

	workspace := x509.NewCertPool()
	workspace.AppendCertsFromPEM(certPEM)
	resp, err := through(api.Listener.Addr().String(), "https://api.example.com/v1", &tls.Config{RootCAs: workspace})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("intercepted request: %v %v", resp, err)
	}
	if _, err := through(plain.Listener.Addr().String(), "http://api.example.com/x?y", nil); err != nil {
		t.Fatal(err)
	}
	// A guest slower to speak than serverFirstWait (a loaded emulated CPU)
	// to a name the swap covers is still intercepted.
	n.policy.Store(&usernet.Policy{AllowNames: []string{"api.example.com"}})
	name, delay = "api.example.com.", serverFirstWait+time.Second
	resp, err = through(api.Listener.Addr().String(), "https://api.example.com/slow", &tls.Config{RootCAs: workspace})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a slow guest's request: %v %v", resp, err)
	}
	name, delay = "", 0
	// Another host is not intercepted: the guest sees the host's own
	// certificate (and here, trusting only the workspace CA, refuses it).
	if _, err := through(api.Listener.Addr().String(), "https://www.example.com/", &tls.Config{RootCAs: workspace}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("TLS to another host: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 || got[0] != "Bearer the-value" || got[1] != "Bearer "+ph || got[2] != "Bearer the-value" {
		t.Errorf("the hosts got %q", got)
	}
	var swapped, flagged bool
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		var ev usernet.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Swap != nil {
			swapped = swapped || ev.Swap.Result == intercept.ResultSwapped && ev.Swap.Name == "K" && ev.Swap.Path == "/v1"
			flagged = flagged || ev.Swap.Result == intercept.ResultFlagged && ev.Reason == "placeholder of K sent to api.example.com" && ev.Swap.Path == "/x"
		}
	}
	if !swapped || !flagged || strings.Contains(log.String(), "the-value") {
		t.Errorf("decision log:\n%s", log.String())
	}
}

func TestNewSwapNeedsSource(t *testing.T) {
	if _, err := newSwap(&usernet.SwapConfig{}, nil, nil); err == nil || !strings.Contains(err.Error(), "no source") {
		t.Errorf("newSwap without a source: %v", err)
	}
}
