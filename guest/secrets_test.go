//go:build linux

package guest

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/internal/testenv"
)

// secretsAgent is an agent whose secrets live under a test folder (a real
// tmpfs mounted there), connected to a host client.
func secretsAgent(t *testing.T) (*Agent, *channel.Client) {
	t.Helper()
	testenv.RequireRoot(t, "mounting the secrets tmpfs")
	dir := t.TempDir()
	a := &Agent{reaper: testAgent.reaper, started: time.Now(), secrets: secretsState{
		dir: filepath.Join(dir, "secrets"), sock: filepath.Join(dir, "api.sock"), root: filepath.Join(dir, "root"),
	}}
	t.Cleanup(func() {
		if a.secrets.listener != nil {
			a.secrets.listener.Close()
		}
		syscall.Unmount(a.secrets.dir, syscall.MNT_DETACH)
	})
	c := connectAgent(t, a, channel.HelloRequest{User: "nobody"})
	return a, c
}

func askSocket(t *testing.T, sock, req string) map[string]any {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte(req))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("reply %q: %v", line, err)
	}
	return m
}

func TestSecretsMaterializeFetchPurge(t *testing.T) {
	a, c := secretsAgent(t)
	nobody, err := lookupUser("nobody")
	if err != nil {
		t.Skip("no nobody user on this host")
	}
	ctx := context.Background()
	values := [][]byte{[]byte("s3cr3t-value-one"), []byte("bin\x00ary\nwith newline\n")}
	err = c.DeliverSecrets(ctx, channel.SecretsRequest{
		Items:    []channel.SecretItem{{Name: "API_KEY"}, {Name: "BLOB"}},
		OnDemand: []string{"DB_PASSWORD"},
	}, values)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"API_KEY", "BLOB"} {
		p := filepath.Join(a.secrets.dir, name)
		b, err := os.ReadFile(p)
		if err != nil || string(b) != string(values[i]) {
			t.Fatalf("%s: %q %v", name, b, err)
		}
		fi, _ := os.Stat(p)
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o400 || st.Uid != nobody.uid {
			t.Fatalf("%s: mode %v uid %d", name, fi.Mode(), st.Uid)
		}
	}
	if !isMountPoint(a.secrets.dir) {
		t.Fatal("secrets are not on their own tmpfs")
	}

	// On demand: the host decides every fetch.
	var asked []string
	c.SetFetchHandler(func(ctx context.Context, name string) ([]byte, func(), error) {
		asked = append(asked, name)
		if name != "DB_PASSWORD" {
			return nil, nil, errors.New("denied: " + name + " is not declared on demand")
		}
		v := []byte("hunter2-but-longer")
		return v, func() { zero(v) }, nil
	})
	m := askSocket(t, a.secrets.sock, "GET DB_PASSWORD\n")
	if m["ok"] != true || m["value"] != base64.StdEncoding.EncodeToString([]byte("hunter2-but-longer")) {
		t.Fatalf("fetch: %v", m)
	}
	m = askSocket(t, a.secrets.sock, "GET API_KEY\n")
	if m["ok"] != false || !strings.Contains(m["error"].(string), "denied") {
		t.Fatalf("undeclared fetch: %v", m)
	}
	m = askSocket(t, a.secrets.sock, "PUT X\n")
	if m["ok"] != false {
		t.Fatalf("bad request: %v", m)
	}
	m = askSocket(t, a.secrets.sock, strings.Repeat("A", 1000)+"\n")
	if m["ok"] != false {
		t.Fatalf("oversized request: %v", m)
	}
	if strings.Join(asked, ",") != "DB_PASSWORD,API_KEY" {
		t.Fatalf("the host saw %v", asked)
	}
	// Every process learns where the socket is.
	es, out, _ := run(t, c, channel.ExecRequest{Argv: []string{"sh", "-c", "echo $" + SecretsSockEnv}, User: "root"}, nil)
	if es.Code != 0 || strings.TrimSpace(out) != a.secrets.sock {
		t.Fatalf("env: %+v %q", es, out)
	}

	purged, err := c.Purge(ctx)
	if err != nil || strings.Join(purged, ",") != "API_KEY,BLOB" {
		t.Fatalf("purge: %v %v", purged, err)
	}
	if ents, _ := os.ReadDir(a.secrets.dir); len(ents) != 0 {
		t.Fatalf("files left after purge: %d", len(ents))
	}
	// Rehydration after a purge delivers again into the same tmpfs.
	if err := c.DeliverSecrets(ctx, channel.SecretsRequest{Items: []channel.SecretItem{{Name: "API_KEY"}}}, values[:1]); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(a.secrets.dir, "API_KEY")); string(b) != string(values[0]) {
		t.Fatalf("rehydrated: %q", b)
	}
}

func TestSecretsRejectBadNames(t *testing.T) {
	_, c := secretsAgent(t)
	err := c.DeliverSecrets(context.Background(), channel.SecretsRequest{Items: []channel.SecretItem{{Name: "../etc/passwd"}}}, [][]byte{[]byte("x")})
	if err == nil || !strings.Contains(err.Error(), "not a valid name") {
		t.Fatalf("got %v", err)
	}
}

func FuzzParseSecretRequest(f *testing.F) {
	for _, s := range []string{"GET DB_PASSWORD", "GET ", "GET a/b", "get X", "GET X Y", "", "GET _9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		name, err := ParseSecretRequest(line)
		if err != nil {
			return
		}
		if !secretName.MatchString(name) || strings.ContainsAny(name, "/. \x00") || line != "GET "+name {
			t.Fatalf("accepted %q as %q", line, name)
		}
	})
}
