package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *lockedBuffer
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
	// The free port is found by binding and releasing it, so another process
	// can take it before the registry does: retry a few times.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		r, err := startRegistry(t, bin, dir, root)
		if err == nil {
			t.Cleanup(r.Stop)
			return r
		}
		lastErr = err
	}
	t.Fatalf("start docker-registry: %v", lastErr)
	return nil
}

func startRegistry(t testing.TB, bin, dir, root string) (*Registry, error) {
	port, err := freePort()
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
	r := &Registry{
		Host:   host,
		URL:    "http://" + host,
		Root:   root,
		exited: make(chan struct{}),
		out:    &lockedBuffer{},
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout = r.out
	cmd.Stderr = r.out
	// A registry must not outlive a test binary killed by a timeout.
	cmd.SysProcAttr = pdeathsig()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	r.cmd = cmd
	go func() {
		_ = cmd.Wait()
		close(r.exited)
	}()

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(registryReadyTimeout)
	for {
		select {
		case <-r.exited:
			return nil, fmt.Errorf("docker-registry on %s exited early: %s", host, strings.TrimSpace(r.out.String()))
		default:
		}
		resp, err := client.Get(r.URL + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		if time.Now().After(deadline) {
			r.Stop()
			return nil, fmt.Errorf("docker-registry on %s did not answer GET /v2/ within %v (last error %v): %s",
				host, registryReadyTimeout, err, strings.TrimSpace(r.out.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the registry and waits for it to exit. Stopping twice is fine;
// later pulls from r fail with "connection refused".
func (r *Registry) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
	r.cmd = nil
}

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
	ref := r.Ref(repo)
	tag, err := name.ParseReference(ref)
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

// PushIndex pushes the image index idx as repo and returns the full
// reference.
func (r *Registry) PushIndex(t testing.TB, repo string, idx v1.ImageIndex) string {
	t.Helper()
	ref := r.Ref(repo)
	tag, err := name.ParseReference(ref)
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := remote.WriteIndex(tag, idx, remote.WithContext(ctx)); err != nil {
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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockedBuffer collects a child's output from two pipes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
