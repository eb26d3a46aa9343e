package testenv

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/microagent-dev/microagent/credswap"
)

// StartTLSServer serves handler over HTTPS (HTTP/1.1 and HTTP/2) on
// 127.0.0.1 until the test ends, with a certificate for whatever name a
// client asks for, signed by a CA of the test's own: a stand-in for an API
// host. It returns the server and the CA's PEM certificate (what
// --egress-ca-file is given).
func StartTLSServer(t testing.TB, handler http.Handler) (*httptest.Server, []byte) {
	t.Helper()
	caCert, caKey, err := credswap.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := credswap.LoadCA(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) { return ca.Leaf(h.ServerName) }}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes a test's clients give up
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, caCert
}
