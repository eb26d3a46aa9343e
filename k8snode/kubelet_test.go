package k8snode

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestKubeletAPIAuth attacks the node's kubelet API (no VM needed): a
// client without a certificate, or with one from another CA, gets no TLS
// session; a certificate from the cluster CA whose user no RBAC rule
// grants anything is refused exec, logs and the pod list (403); the
// apiserver's own client certificate is served.
func TestKubeletAPIAuth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newNodeEnv(t, "an1")
	t.Cleanup(e.run(ctx, t))
	cp := e.cp

	base := "https://" + e.cfg.Listen
	client := func(certs ...tls.Certificate) *http.Client {
		// The serving certificate is the node's self-signed one: the
		// attacker does not verify it, which only helps the attacker.
		// The certificate is offered whatever CAs the server names.
		tc := &tls.Config{InsecureSkipVerify: true}
		if len(certs) > 0 {
			tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
		}
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	}
	load := func(crt, key string) tls.Certificate {
		c, err := tls.LoadX509KeyPair(crt, key)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	get := func(c *http.Client, method, path string) (int, string, error) {
		req, _ := http.NewRequestWithContext(ctx, method, base+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(b), nil
	}

	if code, _, err := get(client(), http.MethodGet, "/pods"); err == nil {
		t.Errorf("no client certificate: answered %d", code)
	}
	other := selfSigned(t)
	if code, _, err := get(client(other), http.MethodGet, "/pods"); err == nil {
		t.Errorf("a certificate from another CA: answered %d", code)
	}
	eve := client(load(cp.EveCert, cp.EveKey))
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/pods"},
		{http.MethodPost, "/exec/default/p/main?command=id&output=1"},
		{http.MethodGet, "/containerLogs/default/p/main"},
		{http.MethodPost, "/portForward/default/p"},
		{http.MethodGet, "/stats/summary"},
	} {
		if code, body, err := get(eve, r.method, r.path); err != nil || code != http.StatusForbidden {
			t.Errorf("eve %s %s: %d %q %v, want 403", r.method, r.path, code, body, err)
		}
	}
	admin := client(load(cp.KubeletClientCert, cp.KubeletClientKey))
	if code, body, err := get(admin, http.MethodGet, "/pods"); err != nil || code != http.StatusOK || !strings.Contains(body, "PodList") {
		t.Errorf("the apiserver's client: /pods %d %q %v", code, body, err)
	}
}

// selfSigned is a certificate no cluster CA signed.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	cert, err := servingCert(Config{NodeName: "eve", Address: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
