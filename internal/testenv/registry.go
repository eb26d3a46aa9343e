package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RegistryBinary is where Debian's docker-registry package installs the
// registry (distribution 2.8).
const RegistryBinary = "/usr/bin/docker-registry"

// registryReadyTimeout bounds the wait for a fresh registry to answer.
const registryReadyTimeout = 10 * time.Second

// Registry is a running docker-registry on the loopback interface, private
// to one test and stopped when the test ends.
type Registry struct {
	// Host is "127.0.0.1:PORT", the registry part of image references.
	Host string
	// URL is "http://127.0.0.1:PORT".
	URL string
	// Root is the registry's storage directory (filesystem driver), so tests
	// can tamper with stored blobs (see BlobPath).
	Root string

	proc *Process
}

// StartRegistry starts a docker-registry on 127.0.0.1 with a free port and
// storage in a temporary directory, waits until GET /v2/ answers, and stops
// it when the test ends. Without the binary the test is skipped (under
// CI=true it fails).
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	bin := RegistryBinary
	if LookTool(bin) == "" {
		bin = LookTool("docker-registry")
	}
	if bin == "" {
		missing(t, "docker-registry not found", "docker-registry")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "storage")
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatal(err)
	}
	return StartRetried(t, "docker-registry", func() (*Registry, error) {
		return startRegistry(t, bin, dir, root)
	})
}

func startRegistry(t testing.TB, bin, dir, root string) (*Registry, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	host := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, root, host)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p, err := StartProcess(exec.Command(bin, "serve", cfgPath))
	if err != nil {
		return nil, err
	}
	r := &Registry{Host: host, URL: "http://" + host, Root: root, proc: p}
	switch err := WaitHTTP(r.URL+"/v2/", time.Second, registryReadyTimeout, p.Exited()); {
	case err == nil:
		return r, nil
	case errors.Is(err, ErrExited):
		return nil, fmt.Errorf("docker-registry on %s exited early: %s", host, strings.TrimSpace(p.Output()))
	default:
		p.Stop()
		return nil, fmt.Errorf("docker-registry on %s did not answer GET /v2/ within %v (%v): %s",
			host, registryReadyTimeout, err, strings.TrimSpace(p.Output()))
	}
}

// Stop kills the registry and waits for it to exit. Stopping twice is fine;
// later pulls from r fail with "connection refused".
func (r *Registry) Stop() { r.proc.Stop() }

// Ref returns the full reference "127.0.0.1:PORT/repo[:tag]" for repo; a repo
// without a tag or digest gets ":latest".
func (r *Registry) Ref(repo string) string {
	if !strings.ContainsAny(repo, ":@") {
		repo += ":latest"
	}
	return r.Host + "/" + repo
}

// BlobPath returns the file in the registry's storage that holds the blob
// with digest h (distribution 2.8 filesystem layout).
func (r *Registry) BlobPath(h v1.Hash) string {
	return filepath.Join(r.Root, "docker", "registry", "v2", "blobs", h.Algorithm, h.Hex[:2], h.Hex, "data")
}

// PushImage pushes img as repo (":latest" when repo has no tag) and returns
// the full reference.
func (r *Registry) PushImage(t testing.TB, repo string, img v1.Image) string {
	t.Helper()
	return r.push(t, repo, img)
}

// PushIndex pushes the image index idx as repo and returns the full
// reference.
func (r *Registry) PushIndex(t testing.TB, repo string, idx v1.ImageIndex) string {
	t.Helper()
	return r.push(t, repo, idx)
}

// push pushes an image or an index (remote.Write and remote.WriteIndex are
// both remote.Push) and returns the full reference.
func (r *Registry) push(t testing.TB, repo string, obj remote.Taggable) string {
	t.Helper()
	ref := r.Ref(repo)
	tag, err := name.ParseReference(ref)
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := remote.Push(tag, obj, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

// PushBusybox pushes BusyboxImage as repo and returns the full reference.
func (r *Registry) PushBusybox(t testing.TB, repo string) string {
	t.Helper()
	return r.PushImage(t, repo, BusyboxImage(t))
}

// PushWhiteout pushes WhiteoutImage as repo and returns the full reference.
func (r *Registry) PushWhiteout(t testing.TB, repo string) string {
	t.Helper()
	return r.PushImage(t, repo, WhiteoutImage(t))
}

// PushUser pushes UserImage as repo and returns the full reference.
func (r *Registry) PushUser(t testing.TB, repo string) string {
	t.Helper()
	return r.PushImage(t, repo, UserImage(t))
}
