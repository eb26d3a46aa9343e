package intercept

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/credswap"
	"github.com/microagent-dev/microagent/vmm"
)

// apiHost is the name the guest asks for; httptest's certificate (its own
// CA, trusted through extra roots as --egress-ca-file would) covers it.
const apiHost = "api.example.com"

// testSource is the test's Source: values by name, changeable at any time
// (a rotation), or a failure.
type testSource struct {
	mu     sync.Mutex
	values map[string]string
	errs   map[string]error
	calls  int
}

func (s *testSource) Value(_ context.Context, r vmm.SwapRequest) ([]byte, error) {
	name := r.Name
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if err := s.errs[name]; err != nil {
		return nil, err
	}
	v, ok := s.values[name]
	if !ok {
		return nil, &SourceError{Kind: "not declared"}
	}
	return []byte(v), nil
}

func (s *testSource) set(name, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[name] = value
}

// apiServer is the real host: an HTTPS server on loopback (HTTP/1.1 and
// HTTP/2) that records what it received.
type apiServer struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
	hook func(w http.ResponseWriter, r *http.Request) // optional answer
}

type seen struct {
	proto  string
	header http.Header
	body   string
	host   string
}

func newAPI(t testing.TB) *apiServer {
	a := &apiServer{}
	a.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.reqs = append(a.reqs, seen{proto: r.Proto, header: r.Header.Clone(), body: string(body), host: r.Host})
		hook := a.hook
		a.mu.Unlock()
		if hook != nil {
			hook(w, r)
			return
		}
		io.WriteString(w, "ok")
	}))
	a.EnableHTTP2 = true
	a.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes of the untrusted test
	a.StartTLS()
	t.Cleanup(a.Close)
	return a
}

func (a *apiServer) received() []seen {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]seen(nil), a.reqs...)
}

// rootsFor is the host's roots plus the API server's CA, as
// --egress-ca-file gives them.
func rootsFor(t testing.TB, a *apiServer) *x509.CertPool {
	pemCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Certificate().Raw})
	pool, err := Roots(pemCA)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

// harness is the network side: a loopback listener standing for the
// guest's flows to apiHost, each served by the interceptor, which dials
// upstream (the API server).
type harness struct {
	ic     *Interceptor
	caPool *x509.CertPool
	addr   string
	boot   []byte

	mu     sync.Mutex
	events []Event
	errs   []error
}

func newHarness(t testing.TB, rules []Rule, src Source, upstream string, roots *x509.CertPool) *harness {
	certPEM, keyPEM, err := credswap.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := credswap.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := NewRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{caPool: x509.NewCertPool()}
	h.caPool.AppendCertsFromPEM(certPEM)
	h.ic, err = New(Config{CA: ca, Rules: rs, Source: src, Roots: roots, Events: func(e Event) {
		h.mu.Lock()
		h.events = append(h.events, e)
		h.mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	h.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := h.ic.Serve(ctx, c, apiHost, func(ctx context.Context) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "tcp", upstream)
				})
				if err != nil {
					h.mu.Lock()
					h.errs = append(h.errs, err)
					h.mu.Unlock()
				}
			}()
		}
	}()
	return h
}

// client is the guest's HTTP client: it trusts the workspace CA and
// reaches apiHost through the harness, over HTTP/1.1 or HTTP/2 only.
func (h *harness) client(proto string) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", h.addr)
		},
		Protocols: new(http.Protocols),
	}
	tr.TLSClientConfig = &tls.Config{RootCAs: h.caPool}
	if proto == "h2" {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func (h *harness) recorded() ([]Event, []error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.events...), append([]error(nil), h.errs...)
}

// noValueIn fails when value appears in any event or Serve error.
func (h *harness) noValueIn(t *testing.T, values ...string) {
	t.Helper()
	evs, errs := h.recorded()
	b, _ := json.Marshal(evs)
	for _, e := range errs {
		b = append(b, e.Error()...)
	}
	for _, e := range evs {
		b = append(b, e.String()...)
	}
	for _, v := range values {
		if bytes.Contains(b, []byte(v)) {
			t.Errorf("a value appears in the events or errors: %s", b)
		}
	}
}

func bootNonce(t testing.TB) []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

func do(t *testing.T, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func newReq(t *testing.T, method, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+apiHost+path, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestSwapHeaders(t *testing.T) {
	for _, proto := range []string{"http/1.1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			api := newAPI(t)
			boot := bootNonce(t)
			ph := credswap.Placeholder("API_KEY", boot)
			const value = "sk-real-0123456789abcdef"
			src := &testSource{values: map[string]string{"API_KEY": value}}
			h := newHarness(t, []Rule{{Name: "API_KEY", Placeholder: ph, Hosts: []string{apiHost}}}, src, api.Listener.Addr().String(), rootsFor(t, api))

			req := newReq(t, "POST", "/v1/messages?key=q", strings.NewReader(`{"prompt":"hi"}`))
			req.Header.Set("Authorization", "Bearer "+ph)
			req.Header.Set("X-Api-Key", ph)
			req.Header.Set("X-Custom", "a-"+ph+"-b-"+ph)
			req.Header.Set("X-Plain", "nothing here")
			status, body := do(t, h.client(proto), req)
			if status != 200 || body != "ok" {
				t.Fatalf("got %d %q", status, body)
			}
			got := api.received()
			if len(got) != 1 {
				t.Fatalf("the host got %d requests", len(got))
			}
			g := got[0]
			if want := map[string]string{"http/1.1": "HTTP/1.1", "h2": "HTTP/2.0"}[proto]; g.proto != want {
				t.Errorf("the guest spoke %s, the host got %s", proto, g.proto)
			}
			if a := g.header.Get("Authorization"); a != "Bearer "+value {
				t.Errorf("Authorization at the host: %q", a)
			}
			if a := g.header.Get("X-Api-Key"); a != value {
				t.Errorf("X-Api-Key at the host: %q", a)
			}
			if a := g.header.Get("X-Custom"); a != "a-"+value+"-b-"+value {
				t.Errorf("X-Custom at the host: %q", a)
			}
			if g.header.Get("X-Plain") != "nothing here" || g.body != `{"prompt":"hi"}` || g.host != apiHost {
				t.Errorf("the request changed on the way: %+v", g)
			}
			if strings.Contains(fmt.Sprint(g.header), ph) {
				t.Errorf("a placeholder reached the host: %v", g.header)
			}
			evs, _ := h.recorded()
			if len(evs) != 1 {
				t.Fatalf("events: %+v", evs)
			}
			e := evs[0]
			if e.Name != "API_KEY" || e.Host != apiHost || e.Method != "POST" || e.Path != "/v1/messages" || e.Result != ResultSwapped || e.Status != 200 || e.Time.IsZero() {
				t.Errorf("event: %+v", e)
			}
			h.noValueIn(t, value)
		})
	}
}

// TestSwapProtocolSeen checks the guest's protocol reaches the interceptor:
// HTTP/2 toward the guest is served by the HTTP/2 server.
func TestSwapProtocolSeen(t *testing.T) {
	api := newAPI(t)
	ph := credswap.Placeholder("K", bootNonce(t))
	src := &testSource{values: map[string]string{"K": "v"}}
	h := newHarness(t, []Rule{{Name: "K", Placeholder: ph, Hosts: []string{apiHost}}}, src, api.Listener.Addr().String(), rootsFor(t, api))
	for _, proto := range []string{"http/1.1", "h2"} {
		resp, err := h.client(proto).Do(newReq(t, "GET", "/", nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := map[string]int{"http/1.1": 1, "h2": 2}[proto]
		if resp.ProtoMajor != want {
			t.Errorf("%s client got %s", proto, resp.Proto)
		}
	}
}

func TestSwapBasic(t *testing.T) {
	api := newAPI(t)
	ph := credswap.Placeholder("GH_TOKEN", bootNonce(t))
	const value = "ghp_realtoken0123"
	src := &testSource{values: map[string]string{"GH_TOKEN": value}}
	h := newHarness(t, []Rule{{Name: "GH_TOKEN", Placeholder: ph, Hosts: []string{".example.com"}}}, src, api.Listener.Addr().String(), rootsFor(t, api))
	req := newReq(t, "GET", "/repo.git/info/refs", nil)
	req.SetBasicAuth("x-access-token", ph)
	if status, _ := do(t, h.client("http/1.1"), req); status != 200 {
		t.Fatalf("status %d", status)
	}
	r := http.Request{Header: api.received()[0].header}
	user, pass, ok := r.BasicAuth()
	if !ok || user != "x-access-token" || pass != value {
		t.Errorf("Basic credential at the host: %q %q %v", user, pass, ok)
	}
	h.noValueIn(t, value)
}

func TestPlaceholderOfOtherHostUnchangedAndFlagged(t *testing.T) {
	api := newAPI(t)
	boot := bootNonce(t)
	mine, other := credswap.Placeholder("MINE", boot), credswap.Placeholder("OTHER", boot)
	src := &testSource{values: map[string]string{"MINE": "mine-value", "OTHER": "other-value"}}
	h := newHarness(t, []Rule{
		{Name: "MINE", Placeholder: mine, Hosts: []string{apiHost}},
		{Name: "OTHER", Placeholder: other, Hosts: []string{"uploads.other.test"}},
	}, src, api.Listener.Addr().String(), rootsFor(t, api))
	req := newReq(t, "PUT", "/exfil?x=1", nil)
	req.Header.Set("X-Steal", other)
	req.SetBasicAuth("u", other)
	if status, _ := do(t, h.client("h2"), req); status != 200 {
		t.Fatalf("status %d", status)
	}
	g := api.received()[0]
	if g.header.Get("X-Steal") != other {
		t.Errorf("the other rule's placeholder changed: %q", g.header.Get("X-Steal"))
	}
	if _, pass, _ := (&http.Request{Header: g.header}).BasicAuth(); pass != other {
		t.Errorf("the other rule's placeholder changed in Basic: %q", pass)
	}
	evs, _ := h.recorded()
	if len(evs) != 1 || evs[0].Result != ResultFlagged || evs[0].Name != "OTHER" || evs[0].Host != apiHost || evs[0].Path != "/exfil" {
		t.Fatalf("events: %+v", evs)
	}
	if s := evs[0].String(); s != "placeholder of OTHER sent to "+apiHost {
		t.Errorf("flag reads %q", s)
	}
	if src.calls != 0 {
		t.Errorf("the Source was asked %d times for a request that swaps nothing", src.calls)
	}
}

func TestRotationTakesEffectNextRequest(t *testing.T) {
	api := newAPI(t)
	ph := credswap.Placeholder("K", bootNonce(t))
	src := &testSource{values: map[string]string{"K": "first"}}
	h := newHarness(t, []Rule{{Name: "K", Placeholder: ph, Hosts: []string{apiHost}}}, src, api.Listener.Addr().String(), rootsFor(t, api))
	c := h.client("http/1.1") // one keep-alive connection
	for _, v := range []string{"first", "second"} {
		src.set("K", v)
		req := newReq(t, "GET", "/", nil)
		req.Header.Set("Authorization", "Bearer "+ph)
		do(t, c, req)
	}
	got := api.received()
	if len(got) != 2 || got[0].header.Get("Authorization") != "Bearer first" || got[1].header.Get("Authorization") != "Bearer second" {
		t.Errorf("the host got %+v", got)
	}
}

func TestSourceFailureAnswers502(t *testing.T) {
	api := newAPI(t)
	boot := bootNonce(t)
	revoked, broken := credswap.Placeholder("REVOKED", boot), credswap.Placeholder("BROKEN", boot)
	const detail = "vault path secret/data/team/key"
	src := &testSource{values: map[string]string{}, errs: map[string]error{
		"REVOKED": &SourceError{Kind: "not found"},
		"BROKEN":  errors.New(detail + ": permission denied"),
	}}
	h := newHarness(t, []Rule{
		{Name: "REVOKED", Placeholder: revoked, Hosts: []string{apiHost}},
		{Name: "BROKEN", Placeholder: broken, Hosts: []string{apiHost}},
	}, src, api.Listener.Addr().String(), rootsFor(t, api))
	for _, tc := range []struct{ name, ph, kind string }{{"REVOKED", revoked, "not found"}, {"BROKEN", broken, "failed"}} {
		req := newReq(t, "GET", "/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+tc.ph)
		status, body := do(t, h.client("h2"), req)
		if status != http.StatusBadGateway || !strings.Contains(body, tc.name) || !strings.Contains(body, "("+tc.kind+")") {
			t.Errorf("%s: got %d %q", tc.name, status, body)
		}
		if strings.Contains(body, "vault") || strings.Contains(body, "permission") {
			t.Errorf("%s: the answer shows the reference's details: %q", tc.name, body)
		}
	}
	if n := len(api.received()); n != 0 {
		t.Errorf("the host got %d requests", n)
	}
	evs, _ := h.recorded()
	if len(evs) != 2 || evs[0].Result != ResultUnresolved || evs[0].Kind != "not found" || evs[1].Kind != "failed" || evs[0].Status != 502 {
		t.Errorf("events: %+v", evs)
	}
	h.noValueIn(t, detail)
}

func TestBadValueRefused(t *testing.T) {
	api := newAPI(t)
	ph := credswap.Placeholder("K", bootNonce(t))
	src := &testSource{values: map[string]string{"K": "v\r\nX-Injected: 1"}}
	h := newHarness(t, []Rule{{Name: "K", Placeholder: ph, Hosts: []string{apiHost}}}, src, api.Listener.Addr().String(), rootsFor(t, api))
	req := newReq(t, "GET", "/", nil)
	req.Header.Set("Authorization", "Bearer "+ph)
	if status, body := do(t, h.client("http/1.1"), req); status != 502 || !strings.Contains(body, "control characters") {
		t.Errorf("got %d %q", status, body)
	}
	if len(api.received()) != 0 {
		t.Error("a value that splits the request went out")
	}
}

func TestConcurrent16(t *testing.T) {
	for _, proto := range []string{"http/1.1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			const n = 16
			api := newAPI(t)
			// Every request is held at the host until all 16 are there:
			// they are served at once, not one after another.
			var arrived sync.WaitGroup
			arrived.Add(n)
			all := make(chan struct{})
			go func() { arrived.Wait(); close(all) }()
			api.hook = func(w http.ResponseWriter, r *http.Request) {
				arrived.Done()
				select {
				case <-all:
				case <-time.After(20 * time.Second):
					http.Error(w, "not all arrived", 500)
					return
				}
				io.WriteString(w, r.Header.Get("X-Api-Key"))
			}
			ph := credswap.Placeholder("K", bootNonce(t))
			src := &testSource{values: map[string]string{"K": "val"}}
			h := newHarness(t, []Rule{{Name: "K", Placeholder: ph, Hosts: []string{apiHost}}}, src, api.Listener.Addr().String(), rootsFor(t, api))
			c := h.client(proto)
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req := newReq(t, "GET", fmt.Sprintf("/%d", i), nil)
					req.Header.Set("X-Api-Key", ph)
					resp, err := c.Do(req)
					if err != nil {
						errs <- err
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(b) != "val" {
						errs <- fmt.Errorf("request %d: %d %q", i, resp.StatusCode, b)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

func TestUntrustedUpstreamIs502(t *testing.T) {
	api := newAPI(t)
	ph := credswap.Placeholder("K", bootNonce(t))
	src := &testSource{values: map[string]string{"K": "must-not-leave"}}
	system, err := Roots(nil) // the host's roots only: the API's CA is not among them
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, []Rule{{Name: "K", Placeholder: ph, Hosts: []string{apiHost}}}, src, api.Listener.Addr().String(), system)
	for _, proto := range []string{"http/1.1", "h2"} {
		req := newReq(t, "GET", "/", nil)
		req.Header.Set("Authorization", "Bearer "+ph)
		status, body := do(t, h.client(proto), req)
		if status != 502 || !strings.Contains(body, "certificate") {
			t.Errorf("%s: got %d %q", proto, status, body)
		}
	}
	if len(api.received()) != 0 {
		t.Error("the request reached a host that was not verified")
	}
	evs, _ := h.recorded()
	if len(evs) != 2 || evs[0].Result != ResultUpstreamFailed || evs[0].Status != 502 || !strings.Contains(evs[0].Error, "certificate") {
		t.Errorf("events: %+v", evs)
	}
	h.noValueIn(t, "must-not-leave")
}

func TestOtherHostOnTheConnectionIs421(t *testing.T) {
	api := newAPI(t)
	ph := credswap.Placeholder("K", bootNonce(t))
	src := &testSource{values: map[string]string{"K": "v"}}
	h := newHarness(t, []Rule{{Name: "K", Placeholder: ph, Hosts: []string{apiHost}}}, src, api.Listener.Addr().String(), rootsFor(t, api))
	req := newReq(t, "GET", "/", nil)
	req.Host = "evil.example.com"
	req.Header.Set("Authorization", "Bearer "+ph)
	if status, _ := do(t, h.client("http/1.1"), req); status != http.StatusMisdirectedRequest {
		t.Errorf("status %d", status)
	}
	if len(api.received()) != 0 || src.calls != 0 {
		t.Error("a request for another host was forwarded")
	}
}

func TestServeRefusesUncoveredName(t *testing.T) {
	api := newAPI(t)
	ph := credswap.Placeholder("K", bootNonce(t))
	h := newHarness(t, []Rule{{Name: "K", Placeholder: ph, Hosts: []string{apiHost}}}, &testSource{}, api.Listener.Addr().String(), nil)
	a, b := net.Pipe()
	defer b.Close()
	if err := h.ic.Serve(context.Background(), a, "elsewhere.test", nil); err == nil || !strings.Contains(err.Error(), "no rule covers") {
		t.Errorf("Serve: %v", err)
	}
}

// TestSwapEchoWithheld: a host that echoes request headers in its
// response (CORS reflecting Origin, a request id, a Basic credential)
// gives the guest back the placeholder, not the value, over either
// protocol; TRACE, which echoes the whole request, is not forwarded.
func TestSwapEchoWithheld(t *testing.T) {
	api := newAPI(t)
	api.hook = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
		w.Header().Set("X-Request-Id", r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Echo-Auth", r.Header.Get("Authorization"))
		io.WriteString(w, "ok")
	}
	ph := credswap.Placeholder("K", bootNonce(t))
	const value = "sk-echoed-value-0123456789"
	src := &testSource{values: map[string]string{"K": value}}
	h := newHarness(t, []Rule{{Name: "K", Placeholder: ph, Hosts: []string{apiHost}}}, src, api.Listener.Addr().String(), rootsFor(t, api))
	for _, proto := range []string{"http/1.1", "h2"} {
		req := newReq(t, "GET", "/", nil)
		req.Header.Set("Origin", "https://"+ph)
		req.Header.Set("X-Request-Id", ph)
		req.SetBasicAuth("u", ph)
		resp, err := h.client(proto).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Request-Id"); got != ph {
			t.Errorf("%s: X-Request-Id came back as %q", proto, got)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://"+ph {
			t.Errorf("%s: the reflected Origin came back as %q", proto, got)
		}
		for k, vs := range resp.Header {
			for _, v := range vs {
				if strings.Contains(v, value) || strings.Contains(v, base64.StdEncoding.EncodeToString([]byte("u:"+value))) {
					t.Errorf("%s: response header %s holds the value: %q", proto, k, v)
				}
			}
		}
	}
	if got := api.received()[0].header.Get("X-Request-Id"); got != value {
		t.Fatalf("the host got %q: the swap did not happen", got)
	}
	req := newReq(t, "TRACE", "/", nil)
	req.Header.Set("X-Key", ph)
	if status, _ := do(t, h.client("http/1.1"), req); status != http.StatusMethodNotAllowed {
		t.Errorf("TRACE: status %d", status)
	}
	if n := len(api.received()); n != 2 {
		t.Errorf("the host got %d requests, want the two GETs only", n)
	}
}
