package intercept

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microagent-dev/microagent/credswap"
	"github.com/microagent-dev/microagent/vmm"
	"golang.org/x/net/http2"
)

// Bounds on what one guest can make the interceptor hold.
const (
	// maxHeaderBytes bounds a request's header block (HTTP/1.1 and
	// HTTP/2's header list alike).
	maxHeaderBytes = 64 << 10
	// maxStreams bounds concurrent HTTP/2 streams per guest connection,
	// and upstream connections per guest connection.
	maxStreams = 32
	// maxInFlight bounds requests being served at once over all guest
	// connections; one more waits for a slot.
	maxInFlight = 64
	// maxRequestsPerConn ends a guest connection gracefully (HTTP/1.1
	// closes after the response, HTTP/2 sends GOAWAY) after that many
	// requests; clients open a new one.
	maxRequestsPerConn = 10000
	// MaxValue bounds a secret value put into a header (a value over it
	// is refused on the host side already, see usernet's value socket).
	MaxValue = 16 << 10
	// maxResponseHeaderBytes bounds the upstream's response headers.
	maxResponseHeaderBytes = 256 << 10
	// maxEventPath bounds the path an event records.
	maxEventPath = 1024
	// maxKind bounds a SourceError kind as echoed to the guest.
	maxKind = 64

	// handshakeTimeout bounds a TLS handshake either way; generous: a
	// guest under load (16 handshakes at once on one emulated CPU) is slow.
	handshakeTimeout  = 30 * time.Second
	readHeaderTimeout = 30 * time.Second
	idleTimeout       = 90 * time.Second
)

// Source resolves a secret's value when a request needs it: every request
// asks again, so a rotation or revocation takes effect on the next one.
// The interceptor zeroes each value once used. An error should be a
// *SourceError: any other error counts as kind "failed", and its text is
// never shown or logged (it might name the reference).
type Source = vmm.SwapSource

// SourceError is a Source's failure, reduced to its kind ("not found",
// "denied", "unavailable"...): the guest sees the kind and the name, never
// the reference's details.
type SourceError = vmm.SwapError

// Results of an Event.
const (
	// ResultSwapped: the value replaced the placeholder and the request
	// got an answer from the host (Event.Status).
	ResultSwapped = "swapped"
	// ResultUpstreamFailed: the value replaced the placeholder but the
	// host could not be reached or was not trusted (Event.Error); the
	// guest got 502. A failed TLS verification sends nothing.
	ResultUpstreamFailed = "upstream failed"
	// ResultUnresolved: the Source failed (Event.Kind); the guest got 502
	// and nothing was sent upstream.
	ResultUnresolved = "unresolved"
	// ResultFlagged: the placeholder went to a host its rule does not
	// name, unchanged: a visible exfiltration attempt.
	ResultFlagged = "flagged"
)

// Event is one placeholder seen in a request: a swap for the audit and the
// egress log, or a flag. It never holds a value.
type Event struct {
	Time time.Time `json:"time"`
	// Name is the rule's (the secret's) name.
	Name string `json:"name"`
	// Host is the host the request went to.
	Host   string `json:"host"`
	Method string `json:"method"`
	// Path is the request's path, without its query (which may carry
	// anything), cut at maxEventPath bytes.
	Path   string `json:"path"`
	Result string `json:"result"`
	// Status is the HTTP status the guest got.
	Status int `json:"status,omitempty"`
	// Kind is a ResultUnresolved's failure kind.
	Kind string `json:"kind,omitempty"`
	// Error is a ResultUpstreamFailed's reason.
	Error string `json:"error,omitempty"`
}

// String says what happened in a line of the egress log's words.
func (e Event) String() string {
	switch e.Result {
	case ResultFlagged:
		return fmt.Sprintf("placeholder of %s sent to %s", e.Name, e.Host)
	case ResultUnresolved:
		return fmt.Sprintf("%s for %s %s%s not resolved (%s)", e.Name, e.Method, e.Host, e.Path, e.Kind)
	case ResultUpstreamFailed:
		return fmt.Sprintf("%s swapped for %s %s%s, upstream failed: %s", e.Name, e.Method, e.Host, e.Path, e.Error)
	}
	return fmt.Sprintf("%s swapped for %s %s%s: %d", e.Name, e.Method, e.Host, e.Path, e.Status)
}

// Config is what an Interceptor needs.
type Config struct {
	// CA mints the certificates the guest is shown.
	CA *credswap.CA
	// Rules say which placeholders become which values toward which hosts.
	Rules Rules
	// Source resolves values per request.
	Source Source
	// Roots verify the real hosts (Roots: the system's and extra ones).
	Roots *x509.CertPool
	// Events receives every swap and flag (nil: none); it is called from
	// many goroutines and should not block.
	Events func(Event)
}

// Roots is the pool upstream hosts are verified against: the system's
// roots plus the certificates in extraPEM (--egress-ca-file; empty: none).
// Call it before the process gives up file access: the system's roots
// are read from files.
func Roots(extraPEM []byte) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool() // no system roots: only the extra ones
	}
	if len(extraPEM) > 0 && !pool.AppendCertsFromPEM(extraPEM) {
		return nil, errors.New("extra CA certificates: no PEM CERTIFICATE block could be read: give a PEM file of CA certificates")
	}
	return pool, nil
}

// Interceptor terminates the guest's TLS toward the hosts its rules cover
// and swaps placeholders for values on the way to the real host.
type Interceptor struct {
	cfg      Config
	inFlight chan struct{}
	errLog   *log.Logger
}

// New checks cfg and returns its Interceptor.
func New(cfg Config) (*Interceptor, error) {
	switch {
	case cfg.CA == nil:
		return nil, errors.New("intercept: no CA")
	case cfg.Source == nil:
		return nil, errors.New("intercept: no Source")
	case cfg.Rules.Len() == 0:
		return nil, errors.New("intercept: no rules")
	}
	if cfg.Roots == nil {
		r, err := Roots(nil)
		if err != nil {
			return nil, err
		}
		cfg.Roots = r
	}
	return &Interceptor{cfg: cfg, inFlight: make(chan struct{}, maxInFlight), errLog: log.New(io.Discard, "", 0)}, nil
}

// Covers reports whether TLS to host is intercepted (some rule names it);
// any other flow must stay end to end.
func (ic *Interceptor) Covers(host string) bool { return ic.cfg.Rules.Covers(host) }

// Rules are the interceptor's rules (to flag placeholders in plain http).
func (ic *Interceptor) Rules() Rules { return ic.cfg.Rules }

// Serve serves one guest TCP connection whose ClientHello names sni (a
// host Covers): TLS toward the guest with a leaf of the workspace CA
// (ALPN h2 and http/1.1), each request's placeholders swapped, and each
// request forwarded over TLS, verified against the Roots as sni, on
// connections dialUpstream opens (called again when one is needed: HTTP/2
// toward the guest over HTTP/1.1 upstream, an upstream that closed). It
// returns when the guest's connection ends or ctx does, and closes guest.
func (ic *Interceptor) Serve(ctx context.Context, guest net.Conn, sni string, dialUpstream func(context.Context) (net.Conn, error)) error {
	defer guest.Close()
	host := strings.ToLower(strings.TrimSuffix(sni, "."))
	if !ic.Covers(host) {
		return fmt.Errorf("intercept: no rule covers %q", sni)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	tc := tls.Server(guest, &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if !strings.EqualFold(strings.TrimSuffix(hello.ServerName, "."), host) {
				return nil, fmt.Errorf("the ClientHello names %q, not %s", hello.ServerName, host)
			}
			return ic.cfg.CA.Leaf(host)
		},
	})
	defer tc.Close()
	stop := context.AfterFunc(ctx, func() { tc.Close() })
	defer stop()
	hctx, hcancel := context.WithTimeout(ctx, handshakeTimeout)
	err := tc.HandshakeContext(hctx)
	hcancel()
	if err != nil {
		return fmt.Errorf("TLS with the guest for %s: %w", host, err)
	}

	// Upstream speaks what the guest chose (HTTP/2 only if the host
	// offers it too): a client that needs HTTP/2 (gRPC) keeps it, and an
	// HTTP/1.1 download is not cut into HTTP/2 frames on the way, which
	// costs a third of the throughput.
	h2 := tc.ConnectionState().NegotiatedProtocol == "h2"
	protos := []string{"http/1.1"}
	if h2 {
		protos = []string{"h2", "http/1.1"}
	}
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return ic.dialTLS(ctx, host, protos, dialUpstream)
		},
		ForceAttemptHTTP2: h2,
		// The guest's Accept-Encoding goes through as it is, and the body
		// comes back as the host sent it.
		DisableCompression:     true,
		MaxConnsPerHost:        maxStreams,
		MaxIdleConnsPerHost:    maxStreams,
		IdleConnTimeout:        idleTimeout,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}
	defer tr.CloseIdleConnections()
	s := &session{ic: ic, host: host, tr: tr, ctx: ctx}
	s.hs = &http.Server{
		Handler:           s,
		MaxHeaderBytes:    maxHeaderBytes,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          ic.errLog,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	if h2 {
		h2s := &http2.Server{MaxConcurrentStreams: maxStreams, IdleTimeout: idleTimeout}
		if err := http2.ConfigureServer(s.hs, h2s); err != nil {
			return fmt.Errorf("HTTP/2: %w", err)
		}
		h2s.ServeConn(tc, &http2.ServeConnOpts{Context: ctx, BaseConfig: s.hs, Handler: s})
		return nil
	}
	l := newOneConnListener(tc)
	s.hs.Serve(l) // returns once the connection is taken and the listener closed
	<-l.connDone
	return nil
}

// dialTLS opens a connection to the real host and verifies it as host:
// there is no way to skip the verification.
func (ic *Interceptor) dialTLS(ctx context.Context, host string, protos []string, dialUpstream func(context.Context) (net.Conn, error)) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	raw, err := dialUpstream(ctx)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, &tls.Config{
		ServerName: host,
		RootCAs:    ic.cfg.Roots,
		NextProtos: protos,
		MinVersion: tls.VersionTLS12,
	})
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// session is one guest connection's requests.
type session struct {
	ic       *Interceptor
	host     string
	tr       *http.Transport
	hs       *http.Server
	ctx      context.Context
	requests atomic.Int64
}

func (s *session) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.requests.Add(1) == maxRequestsPerConn {
		go s.hs.Shutdown(s.ctx) // after this response: the client reconnects
	}
	select {
	case s.ic.inFlight <- struct{}{}:
		defer func() { <-s.ic.inFlight }()
	case <-r.Context().Done():
		return
	}
	if h := hostOnly(r.Host); !strings.EqualFold(h, s.host) {
		// One connection, one host: the value must not follow a request
		// for another site onto a connection verified for this one.
		http.Error(w, fmt.Sprintf("microagent: this connection is for %s, not %s", s.host, h), http.StatusMisdirectedRequest)
		return
	}
	if r.Method == http.MethodTrace || r.Method == http.MethodConnect {
		// TRACE echoes the request, swapped headers included.
		http.Error(w, "microagent: "+r.Method+" is not forwarded on a connection whose secrets are swapped", http.StatusMethodNotAllowed)
		return
	}
	ev := Event{Host: s.host, Method: printable(r.Method), Path: printable(r.URL.Path)}
	if len(ev.Path) > maxEventPath {
		ev.Path = ev.Path[:maxEventPath]
	}

	// echoed, once values are swapped in, puts the placeholders back in
	// the response's headers: a host that echoes a request header (CORS
	// reflecting Origin, X-Request-Id) must not hand the guest its value.
	var echoed func(http.Header)
	var found []string
	for _, vs := range r.Header {
		for _, v := range vs {
			if strings.Contains(v, credswap.PlaceholderPrefix) || strings.Contains(strings.ToLower(v), "basic ") {
				for _, n := range s.ic.cfg.Rules.Find([]byte(v)) {
					if !slices.Contains(found, n) {
						found = append(found, n)
					}
				}
			}
		}
	}
	swap, flag := s.ic.cfg.Rules.forHost(s.host, found)
	for _, rule := range flag {
		e := ev
		e.Name, e.Result = rule.Name, ResultFlagged
		s.ic.emit(e)
	}
	if len(swap) > 0 {
		values, failed, kind := s.resolve(r.Context(), swap, vmm.SwapRequest{Host: ev.Host, Method: ev.Method, Path: ev.Path})
		if failed != "" {
			e := ev
			e.Name, e.Result, e.Kind, e.Status = failed, ResultUnresolved, kind, http.StatusBadGateway
			s.ic.emit(e)
			http.Error(w, fmt.Sprintf("microagent: secret %s could not be resolved (%s)", failed, kind), http.StatusBadGateway)
			return
		}
		for _, vs := range r.Header {
			for i, v := range vs {
				vs[i] = swapIn(v, swap, values)
			}
		}
		// The values are kept until the response's headers are in, then
		// zeroed; what remains are the header strings built from them
		// (see swapIn).
		defer func() {
			for _, v := range values {
				clear(v)
			}
		}()
		echoed = func(h http.Header) { unswap(h, swap, values) }
	}

	var status int
	var upErr error
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "https", s.host
			pr.Out.Host = pr.In.Host
		},
		Transport: s.tr,
		ModifyResponse: func(resp *http.Response) error {
			status = resp.StatusCode
			if echoed != nil {
				echoed(resp.Header)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			upErr, status = err, http.StatusBadGateway
			http.Error(w, fmt.Sprintf("microagent: the request to %s failed: %v", s.host, err), http.StatusBadGateway)
		},
		ErrorLog: s.ic.errLog,
	}
	rp.ServeHTTP(w, r)
	for _, rule := range swap {
		e := ev
		e.Name, e.Status, e.Result = rule.Name, status, ResultSwapped
		if upErr != nil {
			e.Result, e.Error = ResultUpstreamFailed, upErr.Error()
		}
		s.ic.emit(e)
	}
}

// resolve asks the Source for each rule's value. On a failure it zeroes
// what it got and returns the rule's name and the failure's kind.
func (s *session) resolve(ctx context.Context, rules []Rule, req vmm.SwapRequest) (values map[string][]byte, failed, kind string) {
	values = make(map[string][]byte, len(rules))
	for _, r := range rules {
		req.Name = r.Name
		v, err := s.ic.cfg.Source.Value(ctx, req)
		if err == nil {
			err = checkValue(v)
		}
		if err != nil {
			clear(v)
			for _, v := range values {
				clear(v)
			}
			return nil, r.Name, kindOf(err)
		}
		values[r.Name] = v
	}
	return values, "", ""
}

// checkValue refuses a value that cannot be a header's (it would split
// the request) or is larger than MaxValue.
func checkValue(v []byte) error {
	if len(v) == 0 {
		return &SourceError{Kind: "empty value"}
	}
	if len(v) > MaxValue {
		return &SourceError{Kind: fmt.Sprintf("value larger than %d bytes", MaxValue)}
	}
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return &SourceError{Kind: "value has control characters, which no header may carry"}
		}
	}
	return nil
}

// kindOf is what the guest and the logs are told of a Source's failure.
func kindOf(err error) string {
	var se *SourceError
	switch {
	case errors.As(err, &se):
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	default:
		return "failed"
	}
	k := strings.Map(func(c rune) rune {
		if c < ' ' || c >= 0x7f {
			return -1
		}
		return c
	}, se.Kind)
	if len(k) > maxKind {
		k = k[:maxKind]
	}
	if k == "" {
		k = "failed"
	}
	return k
}

func (ic *Interceptor) emit(e Event) {
	if ic.cfg.Events != nil {
		e.Time = time.Now().UTC()
		ic.cfg.Events(e)
	}
}

// hostOnly is a Host header without its port.
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.TrimSuffix(h, ".")
}

// printable is s with every byte that is not printable ASCII written as
// %XX: a method or path the guest chose goes into the egress log and the
// audit, and must not carry terminal escapes or line breaks there.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// oneConnListener hands http.Server one connection, then reports closed
// once that connection is (so Serve returns), signalling connDone.
type oneConnListener struct {
	conn     net.Conn
	took     chan struct{}
	closed   chan struct{}
	closeL   sync.Once
	connDone chan struct{}
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{took: make(chan struct{}, 1), closed: make(chan struct{}), connDone: make(chan struct{})}
	l.conn = &notifyConn{Conn: c, done: l.connDone}
	l.took <- struct{}{}
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case <-l.took:
		return l.conn, nil
	default:
	}
	select {
	case <-l.connDone:
	case <-l.closed:
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.closeL.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

// notifyConn closes done when it is closed.
type notifyConn struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// FlagPlain flags the placeholders in head, the first bytes of a plain
// http flow to host: plain http never gets a value, so any placeholder
// there is one on its way out unchanged.
func (ic *Interceptor) FlagPlain(host string, head []byte) {
	names := ic.cfg.Rules.Find(head)
	if len(names) == 0 {
		return
	}
	ev := Event{Host: host, Result: ResultFlagged}
	line, _, _ := strings.Cut(string(head[:min(len(head), maxEventPath)]), "\r\n")
	if method, rest, ok := strings.Cut(line, " "); ok {
		target, _, _ := strings.Cut(rest, " ")
		target, _, _ = strings.Cut(target, "?")
		ev.Method, ev.Path = printable(method), printable(target)
	}
	for _, n := range names {
		e := ev
		e.Name = n
		ic.emit(e)
	}
}
