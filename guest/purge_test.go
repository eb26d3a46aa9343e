//go:build linux

package guest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/channel"
)

// TestPurgeHostileSecretsFolder runs on the real tmpfs that delivery
// mounts (secretsAgent, as root). The folder belongs to the image's user,
// who plants a symlink to a root-only file, a FIFO nobody reads and a
// directory: the purge must zero neither the file nor hang on the FIFO,
// and must leave the folder empty. A redelivery over a planted symlink
// must not write through it either.
func TestPurgeHostileSecretsFolder(t *testing.T) {
	a, c := secretsAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	value := []byte("s3cr3t")
	if err := c.DeliverSecrets(ctx, channel.SecretsRequest{Items: []channel.SecretItem{{Name: "API_KEY"}}}, [][]byte{value}); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(outside, []byte("root only"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := a.secrets.dir
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(outside, filepath.Join(dir, "LINK")))
	must(syscall.Mkfifo(filepath.Join(dir, "PIPE"), 0o600))
	must(os.MkdirAll(filepath.Join(dir, "DIR", "sub"), 0o755))
	must(os.Symlink(outside, filepath.Join(dir, "DIR", "sub", "link")))

	purged, err := c.Purge(ctx)
	if b, err := os.ReadFile(outside); err != nil || string(b) != "root only" {
		t.Fatalf("the purge wrote through a symlink: %q %v", b, err)
	}
	if err != nil {
		t.Fatalf("purge: %v", err)
	}
	if strings.Join(purged, ",") != "API_KEY" {
		t.Errorf("purged %v, want only the secret file API_KEY", purged)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left in the secrets folder: %v", ents)
	}

	// A symlink where the next delivery writes its file.
	must(os.Symlink(outside, filepath.Join(dir, "API_KEY")))
	if err := c.DeliverSecrets(ctx, channel.SecretsRequest{Items: []channel.SecretItem{{Name: "API_KEY"}}}, [][]byte{value}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "root only" {
		t.Fatalf("a redelivery wrote through a symlink: %q %v", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "API_KEY")); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("API_KEY after redelivery: %v %v", fi, err)
	}
}
