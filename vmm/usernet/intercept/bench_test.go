package intercept

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/microagent-dev/microagent/credswap"
)

// The benchmarks compare a request through the swap with the same request
// through a plain TCP relay (what the network does for a flow it does not
// intercept), both on loopback:
//
//	go test -run '^$' -bench . ./vmm/usernet/intercept/

// relay is a loopback TCP relay to upstream: the unintercepted path.
func relay(tb testing.TB, upstream string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn // closed at cleanup: the clients keep theirs alive
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				u, err := net.Dial("tcp", upstream)
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{})
				go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite(); close(done) }()
				io.Copy(c, u)
				c.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}

// clientTo is a guest client reaching apiHost at addr, trusting pool.
func clientTo(addr string, cfg *tls.Config, proto string) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:    cfg,
		DisableCompression: true,
		Protocols:          new(http.Protocols),
	}
	if proto == "h2" {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	return &http.Client{Transport: tr}
}

// paths sets up both paths to one API server answering with body.
func paths(b *testing.B, body []byte) (through, direct *http.Client, ph string) {
	api := newAPI(b)
	api.hook = func(w http.ResponseWriter, r *http.Request) { w.Write(body) }
	ph = credswap.Placeholder("K", bootNonce(b))
	src := &testSource{values: map[string]string{"K": "sk-0123456789abcdef0123456789abcdef"}}
	h := newHarness(b, []Rule{{Name: "K", Placeholder: ph, Hosts: []string{apiHost}}}, src, api.Listener.Addr().String(), rootsFor(b, api))
	through = clientTo(h.addr, &tls.Config{RootCAs: h.caPool}, "http/1.1")
	direct = clientTo(relay(b, api.Listener.Addr().String()), &tls.Config{RootCAs: rootsFor(b, api)}, "http/1.1")
	return through, direct, ph
}

func get(b *testing.B, c *http.Client, ph string) {
	req, _ := http.NewRequest("GET", "https://"+apiHost+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+ph)
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

func benchRequest(b *testing.B, swap bool) {
	through, direct, ph := paths(b, []byte(`{"ok":true}`))
	c := direct
	if swap {
		c = through
	}
	get(b, c, ph) // connections up before the clock starts
	b.ResetTimer()
	for b.Loop() {
		get(b, c, ph)
	}
}

// BenchmarkRequestThroughSwap is a small HTTPS request on a kept-alive
// connection through the swap.
func BenchmarkRequestThroughSwap(b *testing.B) { benchRequest(b, true) }

// BenchmarkRequestDirect is the same request through a TCP relay.
func BenchmarkRequestDirect(b *testing.B) { benchRequest(b, false) }

func benchDownload(b *testing.B, swap bool) {
	body := make([]byte, 64<<20)
	through, direct, ph := paths(b, body)
	c := direct
	if swap {
		c = through
	}
	get(b, c, ph)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for b.Loop() {
		get(b, c, ph)
	}
}

// BenchmarkDownload64MiBThroughSwap downloads 64 MiB through the swap.
func BenchmarkDownload64MiBThroughSwap(b *testing.B) { benchDownload(b, true) }

// BenchmarkDownload64MiBDirect downloads 64 MiB through a TCP relay.
func BenchmarkDownload64MiBDirect(b *testing.B) { benchDownload(b, false) }
