//go:build linux

package guest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/credswap"
)

// TestEgressPlaceholdersAndCA: a delivery's placeholders become 0400
// files and variables of every exec (a request's own variable wins), its
// CA joins the image's bundle once however often it is delivered, the
// CA files and variables are set, and a purge takes the placeholders
// away.
func TestEgressPlaceholdersAndCA(t *testing.T) {
	a, c := secretsAgent(t)
	nobody, err := lookupUser("nobody")
	if err != nil {
		t.Skip("no nobody user on this host")
	}
	root := a.secrets.root
	bundle := filepath.Join(root, CABundlePaths[0])
	os.MkdirAll(filepath.Dir(bundle), 0o755)
	os.WriteFile(bundle, []byte("-----BEGIN CERTIFICATE-----\nSYSTEM\n-----END CERTIFICATE-----\n"), 0o644)
	ca, _, err := credswap.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	ph := credswap.Placeholder("API_KEY", bytes.Repeat([]byte{7}, credswap.MinBootNonce))
	req := channel.SecretsRequest{Placeholders: []channel.Placeholder{{Name: "API_KEY", Value: ph}}, EgressCA: ca}
	for range 2 {
		if err := c.DeliverSecrets(context.Background(), req, nil); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(a.secrets.dir, "API_KEY")
	b, err := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if err != nil || string(b) != ph || fi.Mode().Perm() != 0o400 || fi.Sys().(*syscall.Stat_t).Uid != nobody.uid {
		t.Fatalf("placeholder file: %q %v %v", b, err, fi.Mode())
	}
	got, _ := os.ReadFile(bundle)
	if bytes.Count(got, bytes.TrimSpace(ca)) != 1 || !bytes.HasPrefix(got, []byte("-----BEGIN CERTIFICATE-----\nSYSTEM")) {
		t.Fatalf("bundle after two deliveries:\n%s", got)
	}
	if alone, _ := os.ReadFile(filepath.Join(root, EgressCAFile)); !bytes.Equal(alone, ca) {
		t.Errorf("%s: %q", EgressCAFile, alone)
	}
	if both, _ := os.ReadFile(filepath.Join(root, EgressCABundle)); !bytes.Equal(both, got) {
		t.Errorf("%s is not the system bundle with the CA", EgressCABundle)
	}
	show := "echo $API_KEY $SSL_CERT_FILE $REQUESTS_CA_BUNDLE $NODE_EXTRA_CA_CERTS"
	_, out, _ := run(t, c, channel.ExecRequest{Argv: []string{"sh", "-c", show}, User: "root"}, nil)
	if want := strings.Join([]string{ph, EgressCABundle, EgressCABundle, EgressCAFile}, " ") + "\n"; out != want {
		t.Errorf("exec environment: %q, want %q", out, want)
	}
	_, out, _ = run(t, c, channel.ExecRequest{Argv: []string{"sh", "-c", "echo $API_KEY"}, Env: []string{"API_KEY=mine"}, User: "root"}, nil)
	if out != "mine\n" {
		t.Errorf("a request's own variable: %q", out)
	}
	purged, err := c.Purge(context.Background())
	if err != nil || len(purged) != 1 || purged[0] != "API_KEY" {
		t.Fatalf("purge: %v %v", purged, err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("placeholder file after the purge: %v", err)
	}
	if _, out, _ = run(t, c, channel.ExecRequest{Argv: []string{"sh", "-c", "echo x${API_KEY}x"}, User: "root"}, nil); out != "xx\n" {
		t.Errorf("placeholder variable after the purge: %q", out)
	}
}

// TestEgressHostile: malformed placeholders and CAs are refused before the
// key exchange, with nothing written, and a symbolic link planted at a
// bundle's path is not written through.
func TestEgressHostile(t *testing.T) {
	a, c := secretsAgent(t)
	ca, _, err := credswap.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	good := "MICROAGENT_PLACEHOLDER_0123"
	for _, tc := range []struct {
		req  channel.SecretsRequest
		want string
	}{
		{channel.SecretsRequest{Placeholders: []channel.Placeholder{{Name: "../x", Value: good}}}, "not a valid name"},
		{channel.SecretsRequest{Placeholders: []channel.Placeholder{{Name: "K", Value: "a=b"}}}, "printable ASCII"},
		{channel.SecretsRequest{Placeholders: []channel.Placeholder{{Name: "K", Value: "a\nB=c"}}}, "printable ASCII"},
		{channel.SecretsRequest{Placeholders: []channel.Placeholder{{Name: "K", Value: strings.Repeat("a", channel.MaxPlaceholder+1)}}}, "want 1 to"},
		{channel.SecretsRequest{Placeholders: []channel.Placeholder{{Name: "K", Value: good}, {Name: "K", Value: good}}}, "delivered twice"},
		{channel.SecretsRequest{EgressCA: []byte("not a certificate")}, "one PEM certificate"},
		{channel.SecretsRequest{EgressCA: append(append([]byte{}, ca...), ca...)}, "one PEM certificate"},
	} {
		err := c.DeliverSecrets(context.Background(), tc.req, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.req, err, tc.want)
		}
	}
	if ents, _ := os.ReadDir(a.secrets.dir); len(ents) != 0 {
		t.Fatalf("a refused delivery wrote %d files", len(ents))
	}

	target := filepath.Join(t.TempDir(), "elsewhere")
	os.WriteFile(target, []byte("untouched"), 0o644)
	link := filepath.Join(a.secrets.root, CABundlePaths[1])
	os.MkdirAll(filepath.Dir(link), 0o755)
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(a.secrets.root, filepath.Dir(EgressCAFile)), 0o755)
	os.Symlink(target, filepath.Join(a.secrets.root, EgressCAFile))
	if err := c.DeliverSecrets(context.Background(), channel.SecretsRequest{EgressCA: ca}, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "untouched" {
		t.Fatalf("written through a symbolic link: %q", b)
	}
	if fi, err := os.Lstat(filepath.Join(a.secrets.root, EgressCAFile)); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("%s: %v %v (the link should be replaced by the file)", EgressCAFile, fi, err)
	}
}
