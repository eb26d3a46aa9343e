package mcpserver

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// HTTPPath is where the streamable HTTP endpoint is served.
const HTTPPath = "/mcp"

// minTokenLen is the shortest bearer token accepted from a file: shorter
// ones can be guessed by anything on the host that can reach loopback.
const minTokenLen = 16

// CheckLoopback refuses a listen address that is not on a loopback
// interface: the server runs commands in VMs for whoever reaches it.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--http %q: give ADDRESS:PORT, e.g. 127.0.0.1:8765", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--http %q: serve only on a loopback address (127.0.0.1:PORT or [::1]:PORT): the server runs commands for whoever can reach it", addr)
	}
	return nil
}

// LoadToken reads a bearer token from a file (its first line, without
// surrounding white space).
func LoadToken(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("--token-file %s: %w", file, err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	tok := []byte(strings.TrimSpace(line))
	clear(b)
	if len(tok) < minTokenLen {
		return nil, fmt.Errorf("--token-file %s: the token must be at least %d characters on the first line (e.g. from: head -c 32 /dev/urandom | xxd -p -c 64)", file, minTokenLen)
	}
	return tok, nil
}

// GenerateToken makes a random bearer token.
func GenerateToken() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	tok := []byte(hex.EncodeToString(b))
	clear(b)
	return tok, nil
}

// HTTPHandler is the streamable HTTP endpoint, behind the bearer token.
func (s *Server) HTTPHandler(token []byte) http.Handler {
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.srv }, &mcp.StreamableHTTPOptions{
		MaxRequestBodyBytes: 16 << 20, // file_write's 8 MiB, base64-encoded, and room
	})
	want := append([]byte("Bearer "), token...)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="microagent"`)
			http.Error(w, "missing or wrong bearer token: send Authorization: Bearer TOKEN (the token serve mcp printed, or the --token-file's)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// ServeHTTP serves streamable HTTP on addr (loopback only) until ctx
// ends; ready is called with the bound address once it listens.
func (s *Server) ServeHTTP(ctx context.Context, addr string, token []byte, ready func(net.Addr)) error {
	if err := CheckLoopback(addr); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--http %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(HTTPPath, s.HTTPHandler(token))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if ready != nil {
		ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
