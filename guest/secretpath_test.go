//go:build linux

package guest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/microagent-dev/microagent/channel"
)

// TestSecretEnvAndPath delivers one secret as a variable and one at a
// path of its own (a Kubernetes secret volume): every exec sees the
// variable, the file reads through its link, and a purge leaves neither.
func TestSecretEnvAndPath(t *testing.T) {
	a, c := secretsAgent(t)
	ctx := context.Background()
	mount := "/etc/creds"
	t.Cleanup(func() { syscall.Unmount(filepath.Join(a.secrets.root, mount), syscall.MNT_DETACH) })
	err := c.DeliverSecrets(ctx, channel.SecretsRequest{Items: []channel.SecretItem{
		{Name: "TOKEN", Env: true},
		{Name: "vol_creds_0", Mount: mount, Path: "sub/password"},
	}}, [][]byte{[]byte("env-value-123"), []byte("file-value-456")})
	if err != nil {
		t.Fatal(err)
	}
	es, out, _ := run(t, c, channel.ExecRequest{Argv: []string{"sh", "-c", `echo "$TOKEN"; cat ` + filepath.Join(a.secrets.root, mount, "sub/password")}, User: "root"}, nil)
	if es.Code != 0 || out != "env-value-123\nfile-value-456" {
		t.Fatalf("exec: %+v %q", es, out)
	}
	m := filepath.Join(a.secrets.root, mount)
	if !isMountPoint(m) {
		t.Fatalf("%s is not a tmpfs of its own", m)
	}
	if fi, err := os.Stat(m); err != nil || fi.Mode().Perm() != 0o755 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("mount %v %v: want root's, 0755", fi.Mode(), err)
	}
	if _, err := c.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(filepath.Join(m, "sub/password")); err == nil {
		t.Fatal("the value still reads at its path after a purge")
	}
	es, out, _ = run(t, c, channel.ExecRequest{Argv: []string{"sh", "-c", `echo "${TOKEN-unset}"`}, User: "root"}, nil)
	if strings.TrimSpace(out) != "unset" {
		t.Fatalf("after a purge the variable is %q", out)
	}
}

// TestSecretTargetHostile: targets that would put the agent (root) onto
// the system's files are refused before anything is written.
func TestSecretTargetHostile(t *testing.T) {
	for _, tc := range [][2]string{
		{"", "x"}, {"relative", "x"}, {"/", "x"}, {"/etc/../proc", "x"}, {"/proc", "x"}, {"/proc/1", "x"},
		{"/sys/kernel", "x"}, {"/dev", "x"}, {"/dev/shm", "x"}, {"/run", "x"}, {"/run/secrets", "x"},
		{"/run/secrets/a", "x"}, {"/etc/x/", "x"}, {"/etc/x", ""}, {"/etc/x", "/abs"}, {"/etc/x", "../../etc/passwd"},
		{"/etc/x", "a/../../b"}, {"/etc/x", "./a"}, {"/etc/x", "a//b"}, {"/etc/x", "a\nb"}, {"/etc/\x00x", "a"},
		{"/etc/x", strings.Repeat("a", 256)}, {"/" + strings.Repeat("a/", 600), "x"},
	} {
		if err := channel.CheckSecretTarget(tc[0], tc[1]); err == nil {
			t.Errorf("CheckSecretTarget(%q, %q) accepted", tc[0], tc[1])
		}
	}
	for _, tc := range [][2]string{{"/etc/creds", "password"}, {"/var/run/x", "a/b.c"}, {"/runx", "..a"}} {
		if err := channel.CheckSecretTarget(tc[0], tc[1]); err != nil {
			t.Errorf("CheckSecretTarget(%q, %q): %v", tc[0], tc[1], err)
		}
	}
	a, c := secretsAgent(t)
	err := c.DeliverSecrets(context.Background(), channel.SecretsRequest{Items: []channel.SecretItem{
		{Name: "OK"}, {Name: "BAD", Mount: "/proc/self", Path: "x"},
	}}, [][]byte{[]byte("v1"), []byte("v2")})
	if err == nil || !strings.Contains(err.Error(), "/proc") {
		t.Fatalf("a delivery to /proc: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a.secrets.dir, "OK")); err == nil {
		t.Fatal("a refused delivery wrote a secret")
	}
	// A symbolic link on the way to the mount is not followed.
	if err := os.MkdirAll(filepath.Join(a.secrets.root, "elsewhere"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(a.secrets.root, "elsewhere"), filepath.Join(a.secrets.root, "link")); err != nil {
		t.Fatal(err)
	}
	err = c.DeliverSecrets(context.Background(), channel.SecretsRequest{Items: []channel.SecretItem{
		{Name: "L", Mount: "/link/creds", Path: "x"},
	}}, [][]byte{[]byte("v")})
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("a mount through a link: %v", err)
	}
	if isMountPoint(filepath.Join(a.secrets.root, "elsewhere", "creds")) {
		syscall.Unmount(filepath.Join(a.secrets.root, "elsewhere", "creds"), syscall.MNT_DETACH)
		t.Fatal("the mount followed the link")
	}
}
