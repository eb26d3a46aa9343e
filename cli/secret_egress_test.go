package cli

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/microagent-dev/microagent/credswap"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/testenv/vmenv"
	"github.com/microagent-dev/microagent/workspace"
)

// seenRequest is what the test's HTTPS server was sent.
type seenRequest struct {
	host, path, proto, auth, apiKey string
}

// TestSecretEgress: a --secret-egress secret never enters the guest. The
// guest holds a placeholder (file and variable); curl (HTTP/2 and 1.1,
// Bearer and Basic) and python's urllib (x-api-key) from the image's own
// packages reach a real HTTPS server on the host's loopback, standing in
// for the API host with a CA of its own (--egress-ca-file), and it
// receives the value; the placeholder sent to another secret's host
// arrives unchanged and is flagged; a rotated value is used at the next
// request, a revoked one answers 502 naming the secret and is audited; 16
// concurrent requests all get it; a snapshot (guest RAM and disk) and
// every file of the state directory never hold it, and the restored guest
// still works. Names resolve through the test's own DNS server
// (--dns-upstream) to 127.0.0.1, reached through host access to the
// server's port only.
func TestSecretEgress(t *testing.T) {
	h := vmenv.VMHome(t)
	reg := testenv.StartRegistry(t)
	ref := reg.PushImage(t, "clients", testenv.HTTPSClientsImage(t))
	t.Setenv("MICROAGENT_AGENT", vmenv.Agent(t))
	w := &wsCLI{bin: buildCLI(t), state: h.Root}
	t.Cleanup(func() { w.killLive(t) })

	var mu sync.Mutex
	var seen []seenRequest
	srv, caCert := testenv.StartTLSServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, seenRequest{host: r.Host, path: r.URL.Path, proto: r.Proto, auth: r.Header.Get("Authorization"), apiKey: r.Header.Get("X-Api-Key")})
		mu.Unlock()
		fmt.Fprintf(rw, "ok %s", r.Proto)
	}))
	dir := t.TempDir()
	caFile := filepath.Join(dir, "api-ca.pem")
	os.WriteFile(caFile, caCert, 0o600)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	last := func(path string) seenRequest {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		for i := len(seen) - 1; i >= 0; i-- {
			if seen[i].path == path {
				return seen[i]
			}
		}
		t.Fatalf("the server got no request for %s", path)
		return seenRequest{}
	}
	dns := testenv.StartLoopbackDNS(t, "", netip.MustParseAddr("127.0.0.1"))

	v1, v2, v3 := leakValue(t, "one"), leakValue(t, "two"), leakValue(t, "three")
	keyFile, otherFile := filepath.Join(dir, "key"), filepath.Join(dir, "other")
	os.WriteFile(keyFile, []byte(v1), 0o600)
	os.WriteFile(otherFile, []byte("other-value-not-under-test"), 0o600)

	var outputs bytes.Buffer // every CLI output: none may hold a value
	cli := func(code int, msg string, args ...string) string {
		t.Helper()
		c, out, errs := w.run(t, "", args...)
		outputs.WriteString(out + errs)
		where := out
		if code != 0 {
			where = errs
		}
		if c != code || !strings.Contains(where, msg) {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want exit %d with %q", args, c, out, errs, code, msg)
		}
		return out
	}
	sh := func(script string) string {
		t.Helper()
		return cli(0, "", "exec", "swap", "--", "sh", "-c", script)
	}
	url := func(host, path string) string { return fmt.Sprintf("https://%s:%d%s", host, port, path) }

	// Bad declarations exit 2 before anything is pulled or booted.
	bad := []string{"create", "bad", "--image", "127.0.0.1:1/none"}
	cli(ExitUsage, "no '@' found", append(bad, "--secret-egress", "K=file:"+keyFile)...)
	cli(ExitUsage, "no wildcards", append(bad, "--secret-egress", "K=file:"+keyFile+"@*.test")...)
	cli(ExitUsage, "an empty host", append(bad, "--secret-egress", "K=file:"+keyFile+"@api.test,")...)
	cli(ExitUsage, "a whole top-level domain", append(bad, "--secret-egress", "K=file:"+keyFile+"@.com")...)
	cli(ExitUsage, "declared twice", append(bad, "--secret", "K=file:"+keyFile, "--secret-egress", "K=file:"+keyFile+"@api.test")...)
	if ents, _ := os.ReadDir(filepath.Join(w.state, workspace.Dir)); len(ents) != 0 {
		t.Fatalf("bad declarations created something: %v", ents)
	}

	cli(0, "", "create", "swap", "--image", ref, "--profile", "small", "--disk-size", "512M",
		"--egress-allow", "api.test", fmt.Sprintf("--host-access=%d", port), "--dns-upstream", dns.Addr.String(),
		"--egress-ca-file", caFile, "--secrets-audit",
		"--secret-egress", "API_KEY=file:"+keyFile+"@api.test", "--secret-egress", "OTHER_KEY=file:"+otherFile+"@other.test")
	cli(0, "egress only api.test other.test", "status", "swap")
	cli(0, "Started swap", "start", "swap")

	out := sh("cat /run/secrets/API_KEY; echo; echo $API_KEY")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	ph := lines[0]
	if len(lines) != 2 || lines[1] != ph || !credswap.ValidPlaceholder(ph) {
		t.Fatalf("the guest's placeholder: %q", out)
	}

	// curl: HTTP/2 (its default over TLS) and HTTP/1.1, Bearer and Basic.
	if out := sh(`curl -sS ` + url("api.test", "/h2") + ` -H "Authorization: Bearer $API_KEY"`); out != "ok HTTP/2.0" {
		t.Errorf("curl over HTTP/2: %q", out)
	}
	if r := last("/h2"); r.auth != "Bearer "+v1 || r.proto != "HTTP/2.0" {
		t.Errorf("the server got %+v over HTTP/2, want the value", r)
	}
	if out := sh(`curl -sS --http1.1 ` + url("api.test", "/h1") + ` -H "Authorization: Bearer $API_KEY"`); out != "ok HTTP/1.1" {
		t.Errorf("curl over HTTP/1.1: %q", out)
	}
	if r := last("/h1"); r.auth != "Bearer "+v1 {
		t.Errorf("the server got %+v over HTTP/1.1", r)
	}
	sh(`curl -sS -u "user:$API_KEY" ` + url("api.test", "/basic"))
	if r := last("/basic"); r.auth != "Basic "+base64.StdEncoding.EncodeToString([]byte("user:"+v1)) {
		t.Errorf("Basic credentials: the server got %q", r.auth)
	}
	// python's urllib, trusting the CA through SSL_CERT_FILE.
	py := `import os, urllib.request; r = urllib.request.Request("` + url("api.test", "/py") + `", headers={"x-api-key": os.environ["API_KEY"]}); print(urllib.request.urlopen(r).read().decode())`
	if out := cli(0, "", "exec", "swap", "--", "python3", "-c", py); out != "ok HTTP/1.1\n" {
		t.Errorf("python: %q", out)
	}
	if r := last("/py"); r.apiKey != v1 {
		t.Errorf("x-api-key from python: the server got %q", r.apiKey)
	}

	// The placeholder sent to another host goes out as it is, flagged.
	sh(`curl -sS ` + url("other.test", "/elsewhere") + ` -H "Authorization: Bearer $API_KEY"`)
	if r := last("/elsewhere"); r.auth != "Bearer "+ph {
		t.Errorf("to other.test the server got %q, want the placeholder unchanged", r.auth)
	}
	cli(0, "placeholder of API_KEY sent to other.test", "egress", "swap")

	// Rotation takes effect at the next request; revocation answers 502.
	os.WriteFile(keyFile, []byte(v2), 0o600)
	sh(`curl -sS ` + url("api.test", "/rotated") + ` -H "Authorization: Bearer $API_KEY"`)
	if r := last("/rotated"); r.auth != "Bearer "+v2 {
		t.Errorf("after the rotation the server got %q", r.auth)
	}
	os.Remove(keyFile)
	out = sh(`curl -sS -w ' %{http_code}' ` + url("api.test", "/revoked") + ` -H "Authorization: Bearer $API_KEY"`)
	if !strings.HasSuffix(out, " 502") || !strings.Contains(out, "API_KEY") || strings.Contains(out, keyFile) {
		t.Errorf("after the revocation: %q, want 502 naming API_KEY and not the reference", out)
	}
	mu.Lock()
	for _, r := range seen {
		if r.path == "/revoked" {
			t.Errorf("a request with a revoked value reached the server: %+v", r)
		}
	}
	mu.Unlock()
	audit := cli(0, "API_KEY egress ok GET api.test/h2", "secret", "audit", "swap")
	if !strings.Contains(audit, "API_KEY egress error GET api.test/revoked") {
		t.Errorf("the audit log has no record of the revoked swap:\n%s", audit)
	}

	// 16 requests at once.
	os.WriteFile(keyFile, []byte(v3), 0o600)
	out = sh(`for i in $(seq 16); do curl -sS -o /dev/null -w '%{http_code}\n' ` + url("api.test", "/many") + ` -H "Authorization: Bearer $API_KEY" 2>&1 & done; wait`)
	if strings.Count(out, "200\n") != 16 {
		t.Errorf("16 concurrent requests: %q", out)
		_, elog, _ := w.run(t, "", "egress", "swap")
		t.Logf("egress log:\n%s", elog)
		_, slog, _ := w.run(t, "", "logs", "swap")
		t.Logf("logs:\n%s", slog[max(0, len(slog)-3000):])
	}
	mu.Lock()
	n := 0
	for _, r := range seen {
		if r.path == "/many" && r.auth == "Bearer "+v3 {
			n++
		}
	}
	mu.Unlock()
	if n != 16 {
		t.Errorf("the server got the value in %d of 16 concurrent requests", n)
	}

	// A snapshot holds the guest's RAM and disk: no value in it, nor
	// anywhere in the state directory; the guest goes on swapping.
	cli(0, "Snapshot swap:s", "snapshot", "create", "swap", "--tag", "s")
	if out := sh(`curl -sS ` + url("api.test", "/after") + ` -H "Authorization: Bearer $API_KEY"`); !strings.HasPrefix(out, "ok ") {
		t.Errorf("after the snapshot: %q", out)
	}
	cli(0, "", "halt", "swap")
	cli(0, "", "start", "swap", "--from-snapshot", "s")
	if out := sh(`curl -sS ` + url("api.test", "/restored") + ` -H "Authorization: Bearer $API_KEY"`); !strings.HasPrefix(out, "ok ") {
		t.Errorf("after the restore: %q", out)
	}
	if r := last("/restored"); r.auth != "Bearer "+v3 {
		t.Errorf("after the restore the server got %q", r.auth)
	}
	cli(0, "", "halt", "swap")

	var needles [][]byte
	for _, v := range []string{v1, v2, v3} {
		needles = append(needles, []byte(v), []byte(base64.StdEncoding.EncodeToString([]byte("user:"+v))))
	}
	for i, nd := range needles {
		if bytes.Contains(outputs.Bytes(), nd) {
			t.Errorf("a CLI output holds secret needle %d", i)
		}
	}
	scanned := 0
	err := filepath.Walk(w.state, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		scanned++
		if hit := scanFile(t, p, needles); hit >= 0 {
			t.Errorf("%s holds secret needle %d", p, hit)
		}
		return nil
	})
	if err != nil || scanned < 10 {
		t.Fatalf("scanned %d files: %v", scanned, err)
	}
	if _, err := os.Stat(filepath.Join(w.state, workspace.Dir, "swap", "snapshots", "s")); err != nil {
		t.Fatalf("the snapshot the scan covered: %v", err)
	}
}
