package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
)

func newStore(t *testing.T) (*Store, home.Home) {
	t.Helper()
	// Keep the user's settings and Docker credentials out of the tests.
	t.Setenv(EnvMirrors, "")
	t.Setenv(EnvInsecure, "")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	h := home.Home{Root: t.TempDir()}
	s, err := OpenStore(h)
	if err != nil {
		t.Fatal(err)
	}
	return s, h
}

func digestOf(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPullThenGetOffline(t *testing.T) {
	r := testenv.StartRegistry(t)
	ref := r.PushBusybox(t, "test/busybox:1")
	s, _ := newStore(t)
	ctx := context.Background()

	var progress bytes.Buffer
	img, err := s.Pull(ctx, ref, PullOptions{Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if img.Ref != ref {
		t.Errorf("Ref = %q, want %q", img.Ref, ref)
	}
	if want := digestOf(t, testenv.BusyboxImage(t)); img.Digest != want {
		t.Errorf("Digest = %v, want %v", img.Digest, want)
	}
	if img.Platform != "linux/amd64" || img.Size <= 0 {
		t.Errorf("Platform %q Size %d", img.Platform, img.Size)
	}
	if strings.Join(img.Config.Cmd, " ") != "/bin/sh" || img.Config.Env[0] != testenv.DefaultPath {
		t.Errorf("Config = %+v", img.Config)
	}
	if !strings.Contains(progress.String(), "Pulling "+ref) || !strings.Contains(progress.String(), "done") {
		t.Errorf("progress output:\n%s", progress.String())
	}

	// With the registry gone, the stored image is served, fast.
	r.Stop()
	start := time.Now()
	got, err := s.Get(ctx, ref, PullMissing)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took > 100*time.Millisecond {
		t.Errorf("Get from the store took %v", took)
	}
	t.Logf("Get from the store: %v", took)
	if got.Digest != img.Digest || got.Config.Cmd[0] != "/bin/sh" {
		t.Errorf("Get = %+v", got)
	}
	if _, err := s.Get(ctx, ref, PullNever); err != nil {
		t.Errorf("PullNever on a stored image: %v", err)
	}
	_, err = s.Get(ctx, ref, PullAlways)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), r.Host) {
		t.Errorf("PullAlways with the registry down: %v", err)
	}

	// The stored image opens as a v1.Image with the pushed content.
	v, err := got.Open()
	if err != nil {
		t.Fatal(err)
	}
	if digestOf(t, v) != img.Digest {
		t.Errorf("opened digest %v", digestOf(t, v))
	}
	layers, err := v.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	found := false
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Name == "bin/busybox" {
			found = true
		}
	}
	if !found {
		t.Error("bin/busybox not in the stored layer")
	}

	// The store is a valid OCI layout with 0600 files.
	for _, f := range []string{"oci-layout", "index.json", "refs.json"} {
		fi, err := os.Stat(filepath.Join(s.Dir(), f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", f, fi.Mode())
		}
	}
	idx, _ := os.ReadFile(filepath.Join(s.Dir(), "index.json"))
	if !strings.Contains(string(idx), ref) {
		t.Errorf("index.json lacks %s:\n%s", ref, idx)
	}
}

func TestGetMissingPulls(t *testing.T) {
	r := testenv.StartRegistry(t)
	ref := r.PushUser(t, "test/user")
	s, _ := newStore(t)
	ctx := context.Background()
	if _, err := s.Get(ctx, ref, PullNever); !errors.Is(err, ErrNotStored) {
		t.Fatalf("PullNever on an empty store: %v", err)
	}
	img, err := s.Get(ctx, ref, PullMissing)
	if err != nil {
		t.Fatal(err)
	}
	c := img.Config
	if c.User != "agent" || c.WorkingDir != "/home/agent" || strings.Join(c.Entrypoint, " ") != "/bin/sh -c" ||
		len(c.Cmd) != 1 || c.Cmd[0] != "echo entry-$FOO; id -u; pwd" || c.Env[1] != "FOO=bar" {
		t.Errorf("Config = %+v", c)
	}
	// By digest, from the store.
	r.Stop()
	byDigest := r.Host + "/test/user@" + img.Digest.String()
	got, err := s.Get(ctx, byDigest, PullNever)
	if err != nil {
		t.Fatal(err)
	}
	if got.Ref != byDigest || got.Digest != img.Digest {
		t.Errorf("by digest: %+v", got)
	}
}

func TestMirror(t *testing.T) {
	r := testenv.StartRegistry(t)
	r.PushBusybox(t, "library/alpine:3.20")
	s, h := newStore(t)
	t.Setenv(EnvMirrors, "docker.io="+r.URL+",ghcr.io=https://m.example")
	ctx := context.Background()
	var progress bytes.Buffer
	img, err := s.Pull(ctx, "docker.io/library/alpine:3.20", PullOptions{Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if img.Ref != "docker.io/library/alpine:3.20" {
		t.Errorf("Ref = %q", img.Ref)
	}
	if !strings.Contains(progress.String(), "mirror "+r.Host) {
		t.Errorf("progress:\n%s", progress.String())
	}
	// Short names and Docker Hub's other names are the same image.
	for _, ref := range []string{"alpine:3.20", "library/alpine:3.20", "index.docker.io/library/alpine:3.20"} {
		got, err := s.Get(ctx, ref, PullNever)
		if err != nil || got.Digest != img.Digest {
			t.Errorf("Get(%q) = %v, %v", ref, got, err)
		}
	}
	list, _ := s.List()
	if len(list) != 1 {
		t.Errorf("List = %d images", len(list))
	}
	// A missing image on the mirror names the mirror.
	_, err = s.Pull(ctx, "alpine:9.99", PullOptions{})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), r.Host) || !strings.Contains(err.Error(), "docker.io/library/alpine:9.99") {
		t.Errorf("missing tag on the mirror: %v", err)
	}

	// The same setting from config.json, when the environment is unset.
	t.Setenv(EnvMirrors, "")
	if err := os.WriteFile(h.Path(ConfigFile), []byte(`{"registry_mirrors":{"docker.io":"`+r.URL+`"},"other":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(ctx, "alpine:3.20", PullOptions{}); err != nil {
		t.Fatalf("mirror from config.json: %v", err)
	}
	// The environment wins over config.json.
	t.Setenv(EnvMirrors, "docker.io=http://127.0.0.1:1")
	rc, err := LoadRegistryConfig(h)
	if err != nil {
		t.Fatal(err)
	}
	if m := rc.Mirrors["index.docker.io"]; m.Host != "127.0.0.1:1" || !m.HTTP {
		t.Errorf("mirror from env: %+v", m)
	}
}

func TestInsecureRefused(t *testing.T) {
	s, h := newStore(t)
	t.Setenv(EnvMirrors, "docker.io=http://mirror.example.com:5000")
	// Refused before any network access.
	_, err := s.Pull(context.Background(), "alpine:3.20", PullOptions{})
	if err == nil || !strings.Contains(err.Error(), "plain http") || !strings.Contains(err.Error(), EnvInsecure) {
		t.Fatalf("http mirror on a non-loopback host: %v", err)
	}
	t.Setenv(EnvInsecure, "mirror.example.com:5000")
	if _, err := LoadRegistryConfig(h); err != nil {
		t.Errorf("listed insecure mirror: %v", err)
	}
	t.Setenv(EnvInsecure, "")
	if err := os.WriteFile(h.Path(ConfigFile), []byte(`{"insecure_registries":["mirror.example.com"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRegistryConfig(h); err != nil {
		t.Errorf("insecure from config.json: %v", err)
	}
	t.Setenv(EnvMirrors, "docker.io")
	if _, err := LoadRegistryConfig(h); err == nil {
		t.Error("malformed mirror list accepted")
	}

	// go-containerregistry falls back to http for private addresses; the
	// guard refuses it without sending anything.
	called := false
	g := &guardTransport{base: roundTripFunc(func(*http.Request) (*http.Response, error) {
		called = true
		return nil, errors.New("sent")
	})}
	req, _ := http.NewRequest("GET", "http://10.1.2.3:5000/v2/", nil)
	if _, err := g.RoundTrip(req); !errors.Is(err, ErrInsecure) || called {
		t.Errorf("guard: err %v, sent %v", err, called)
	}
	req, _ = http.NewRequest("GET", "http://127.0.0.1:5000/v2/", nil)
	if _, err := g.RoundTrip(req); called != true || errors.Is(err, ErrInsecure) {
		t.Errorf("guard refused loopback: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestTamperedBlob(t *testing.T) {
	r := testenv.StartRegistry(t)
	ref := r.PushBusybox(t, "test/tampered")
	layers, err := testenv.BusyboxImage(t).Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, _ := layers[0].Digest()
	blob := r.BlobPath(ld)
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(data) / 2; i < len(data)/2+16; i++ {
		data[i] ^= 0xff
	}
	if err := os.WriteFile(blob, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := newStore(t)
	_, err = s.Pull(context.Background(), ref, PullOptions{})
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), ld.String()) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("tampered layer: %v", err)
	}
	t.Logf("error: %v", err)
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("a ref was recorded: %v", list)
	}
	if _, err := s.Get(context.Background(), ref, PullNever); !errors.Is(err, ErrNotStored) {
		t.Errorf("Get after failed pull: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(s.Dir(), "blobs", "sha256"))
	for _, e := range entries {
		if e.Name() == ld.Hex || strings.HasPrefix(e.Name(), tmpPrefix) {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestPlatformMismatch(t *testing.T) {
	r := testenv.StartRegistry(t)
	arm, err := mutate.ConfigFile(testenv.BusyboxImage(t), withArch(t, testenv.BusyboxImage(t), "arm64"))
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}}},
	), types.OCIImageIndex)
	ref := r.PushIndex(t, "test/armonly", idx)
	s, _ := newStore(t)
	_, err = s.Pull(context.Background(), ref, PullOptions{})
	if !errors.Is(err, ErrPlatform) || !strings.Contains(err.Error(), "linux/arm64, linux/arm/v7") || !strings.Contains(err.Error(), ref) {
		t.Fatalf("arm-only index: %v", err)
	}
	// Asking for the offered platform works.
	img, err := s.Pull(context.Background(), ref, PullOptions{Platform: "linux/arm64"})
	if err != nil {
		t.Fatal(err)
	}
	if img.Platform != "linux/arm64" {
		t.Errorf("Platform = %q", img.Platform)
	}
	// Get with the platform serves the stored arm64 image, and refuses it
	// for amd64 without pulling.
	if got, err := s.GetWithOptions(context.Background(), ref, PullNever, PullOptions{Platform: "linux/arm64"}); err != nil || got.Digest != img.Digest {
		t.Errorf("GetWithOptions arm64: %v, %v", got, err)
	}
	if _, err := s.GetWithOptions(context.Background(), ref, PullNever, PullOptions{Platform: "linux/amd64"}); !errors.Is(err, ErrNotStored) {
		t.Errorf("GetWithOptions amd64 of an arm64 image: %v", err)
	}
	// A plain manifest for another architecture is refused too.
	single := r.PushImage(t, "test/armsingle", arm)
	if _, err := s.Pull(context.Background(), single, PullOptions{}); !errors.Is(err, ErrPlatform) {
		t.Errorf("arm64 manifest: %v", err)
	}
	// An index that has amd64 resolves to it.
	multi := mutate.IndexMediaType(mutate.AppendManifests(idx,
		mutate.IndexAddendum{Add: testenv.BusyboxImage(t), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	), types.OCIImageIndex)
	mref := r.PushIndex(t, "test/multi", multi)
	img, err = s.Pull(context.Background(), mref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != digestOf(t, testenv.BusyboxImage(t)) {
		t.Errorf("resolved %v", img.Digest)
	}
}

func withArch(t *testing.T, img v1.Image, arch string) *v1.ConfigFile {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = arch
	return cf
}

func TestUnknownImage(t *testing.T) {
	r := testenv.StartRegistry(t)
	r.PushBusybox(t, "test/exists")
	s, _ := newStore(t)
	for _, ref := range []string{r.Host + "/test/nosuch:1", r.Host + "/test/exists:nosuchtag"} {
		_, err := s.Pull(context.Background(), ref, PullOptions{})
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), r.Host) {
			t.Errorf("%s: %v", ref, err)
		}
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close()
	s, _ := newStore(t)
	start := time.Now()
	_, err = s.Pull(context.Background(), host+"/x/y:1", PullOptions{})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("closed port: %v", err)
	}
	t.Logf("error after %v: %v", time.Since(start), err)

	// Cancelling the context stops a pull with the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Pull(ctx, host+"/x/y:1", PullOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled pull: %v", err)
	}
}

func TestLoad(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	user := testenv.UserImage(t)

	// docker save
	save := filepath.Join(dir, "save.tar")
	testenv.WriteDockerSave(t, user, "example.com/user:1", save)
	imgs, err := s.Load(ctx, save)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Ref != "example.com/user:1" || imgs[0].Config.User != "agent" {
		t.Fatalf("docker-save load: %+v", imgs)
	}
	wantCfg, _ := user.ConfigName()
	if imgs[0].ConfigDigest != wantCfg {
		t.Errorf("config digest %v, want %v", imgs[0].ConfigDigest, wantCfg)
	}
	checkLayers(t, imgs[0], user)

	// gzip-compressed docker save, under a short Docker Hub name.
	gz := filepath.Join(dir, "save.tar.gz")
	testenv.WriteDockerSave(t, user, "user:gz", filepath.Join(dir, "plain.tar"))
	gzipFile(t, filepath.Join(dir, "plain.tar"), gz)
	imgs, err = s.Load(ctx, gz)
	if err != nil {
		t.Fatal(err)
	}
	if imgs[0].Ref != "docker.io/library/user:gz" {
		t.Errorf("gz load ref %q", imgs[0].Ref)
	}

	// OCI layout, digests kept.
	oci := filepath.Join(dir, "oci.tar")
	testenv.WriteOCILayoutTar(t, testenv.WhiteoutImage(t), "example.com/whiteout:2", oci)
	imgs, err = s.Load(ctx, oci)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Ref != "example.com/whiteout:2" || imgs[0].Digest != digestOf(t, testenv.WhiteoutImage(t)) {
		t.Fatalf("OCI load: %+v", imgs)
	}
	checkLayers(t, imgs[0], testenv.WhiteoutImage(t))

	// A bare tag names the image after the file.
	bare := filepath.Join(dir, "My Image.tar")
	testenv.WriteOCILayoutTar(t, testenv.BusyboxImage(t), "3.20", bare)
	imgs, err = s.Load(ctx, bare)
	if err != nil {
		t.Fatal(err)
	}
	if imgs[0].Ref != "localhost/my-image:3.20" {
		t.Errorf("bare tag ref %q", imgs[0].Ref)
	}

	// Neither kind.
	junk := filepath.Join(dir, "junk.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("hi"))
	_ = tw.Close()
	_ = os.WriteFile(junk, buf.Bytes(), 0o600)
	if _, err := s.Load(ctx, junk); !errors.Is(err, ErrBadArchive) || !strings.Contains(err.Error(), junk) {
		t.Errorf("junk tar: %v", err)
	}
	_ = os.WriteFile(junk, []byte("this is not a tar file at all, not even close............"), 0o600)
	if _, err := s.Load(ctx, junk); !errors.Is(err, ErrBadArchive) {
		t.Errorf("junk file: %v", err)
	}
	if _, err := s.Load(ctx, filepath.Join(dir, "missing.tar")); err == nil {
		t.Error("missing file loaded")
	}
	list, _ := s.List()
	if len(list) != 4 {
		t.Errorf("List after loads: %d", len(list))
	}
}

// checkLayers compares the uncompressed layers of a stored image with img's.
func checkLayers(t *testing.T, stored *Image, img v1.Image) {
	t.Helper()
	v, err := stored.Open()
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Layers()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Layers()
	if len(got) != len(want) {
		t.Fatalf("%d layers, want %d", len(got), len(want))
	}
	for i := range got {
		rc, err := got[i].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		gb, _ := io.ReadAll(rc)
		rc.Close()
		rc, _ = want[i].Uncompressed()
		wb, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(gb, wb) {
			t.Errorf("layer %d differs", i+1)
		}
	}
}

func gzipFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(data)
	_ = zw.Close()
	if err := os.WriteFile(dst, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestListRemovePrune(t *testing.T) {
	r := testenv.StartRegistry(t)
	a := r.PushBusybox(t, "test/a")
	b := r.PushWhiteout(t, "test/b")
	s, _ := newStore(t)
	ctx := context.Background()
	for _, ref := range []string{a, b} {
		if _, err := s.Pull(ctx, ref, PullOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.List()
	if err != nil || len(list) != 2 || list[0].Ref != a || list[1].Ref != b {
		t.Fatalf("List = %v, %v", list, err)
	}
	if freed, err := s.Prune(); err != nil || freed != 0 {
		t.Errorf("Prune with everything in use: %d, %v", freed, err)
	}
	if err := s.Remove(b); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(b); !errors.Is(err, ErrNotStored) || !strings.Contains(err.Error(), b) {
		t.Errorf("second Remove: %v", err)
	}
	if list, _ := s.List(); len(list) != 1 || list[0].Ref != a {
		t.Errorf("List after Remove: %v", list)
	}
	// A stray temporary file from a crashed pull goes too.
	stray := filepath.Join(s.Dir(), "blobs", "sha256", tmpPrefix+"crashed")
	_ = os.WriteFile(stray, []byte("xx"), 0o600)
	freed, err := s.Prune()
	if err != nil {
		t.Fatal(err)
	}
	// b's two upper layers, config and manifest are freed; its first
	// layer differs from a's (extra files), so it goes too.
	if freed < 1000 {
		t.Errorf("Prune freed %d bytes", freed)
	}
	t.Logf("Prune freed %d bytes", freed)
	if _, err := os.Stat(stray); err == nil {
		t.Error("stray temp file survived Prune")
	}
	img, err := s.Get(ctx, a, PullNever)
	if err != nil {
		t.Fatal(err)
	}
	checkLayers(t, img, testenv.BusyboxImage(t))
	if freed, _ := s.Prune(); freed != 0 {
		t.Errorf("second Prune freed %d", freed)
	}
}

func TestConcurrentPulls(t *testing.T) {
	r := testenv.StartRegistry(t)
	refs := []string{r.PushBusybox(t, "c/a"), r.PushUser(t, "c/b"), r.PushWhiteout(t, "c/c"), r.PushBusybox(t, "c/a")}
	_, h := newStore(t)
	var wg sync.WaitGroup
	errs := make([]error, len(refs))
	for i, ref := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A store per goroutine, as separate processes would have.
			s, err := OpenStore(h)
			if err == nil {
				_, err = s.Pull(context.Background(), ref, PullOptions{})
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s, _ := OpenStore(h)
	list, err := s.List()
	if err != nil || len(list) != 3 {
		t.Fatalf("List = %v, %v", list, err)
	}
}

func TestZstdLayer(t *testing.T) {
	r := testenv.StartRegistry(t)
	img := testenv.ZstdImage(t)
	ref := r.PushImage(t, "test/zstd", img)
	s, _ := newStore(t)
	got, err := s.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkLayers(t, got, img)
}

func TestRefKeys(t *testing.T) {
	for in, want := range map[string]string{
		"alpine":                        "docker.io/library/alpine:latest",
		"alpine:3.20":                   "docker.io/library/alpine:3.20",
		"docker.io/library/alpine:3.20": "docker.io/library/alpine:3.20",
		"index.docker.io/foo/bar":       "docker.io/foo/bar:latest",
		"ghcr.io/a/b:1":                 "ghcr.io/a/b:1",
		"127.0.0.1:5000/x":              "127.0.0.1:5000/x:latest",
		"alpine@sha256:" + strings.Repeat("a", 64): "docker.io/library/alpine@sha256:" + strings.Repeat("a", 64),
	} {
		_, got, err := parseRef(in)
		if err != nil || got != want {
			t.Errorf("parseRef(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, _, err := parseRef("UPPER/case"); err == nil || !strings.Contains(err.Error(), "UPPER/case") {
		t.Errorf("bad ref: %v", err)
	}
}

func TestClassifyLocalError(t *testing.T) {
	err := classify(context.Background(), errors.New("manifest is odd"), "example.com/a:1", "example.com")
	if errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "manifest is odd") || !strings.Contains(err.Error(), "example.com/a:1") {
		t.Errorf("local error: %v", err)
	}
}

// TestRemovePrunePinned: an image a workspace is pinned to is not removed
// (all or none, naming who needs it) unless forced, and its blobs survive
// a prune while it is pinned, so it still boots without a registry.
func TestRemovePrunePinned(t *testing.T) {
	r := testenv.StartRegistry(t)
	a := r.PushBusybox(t, "pin/a")
	b := r.PushWhiteout(t, "pin/b")
	s, _ := newStore(t)
	ctx := context.Background()
	var img *Image
	for _, ref := range []string{a, b} {
		i, err := s.Pull(ctx, ref, PullOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ref == a {
			img = i
		}
	}
	nr, err := name.ParseReference(a)
	if err != nil {
		t.Fatal(err)
	}
	pinned := nr.Context().Digest(img.Digest.String()).String()
	pins := []Pin{{Ref: pinned, By: []string{"workspace app", "snapshot app:base"}}}

	err = s.RemovePinned([]string{b, a}, pins)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "workspace app, snapshot app:base are pinned to it") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("remove of a pinned image: %v", err)
	}
	if list, _ := s.List(); len(list) != 2 {
		t.Fatalf("a refused remove changed the store: %v", list)
	}
	if err := s.RemovePinned([]string{b}, pins); err != nil {
		t.Fatalf("remove of an image nothing is pinned to: %v", err)
	}
	if err := s.RemovePinned([]string{a}, nil); err != nil { // --force
		t.Fatal(err)
	}
	freed, kept, err := s.PruneKeeping(pins)
	if err != nil || len(kept) != 1 || kept[0].Ref != pinned || freed == 0 {
		t.Fatalf("prune keeping the pin: freed %d, kept %v, %v", freed, kept, err)
	}
	got, err := s.Get(ctx, pinned, PullNever)
	if err != nil || got.Digest != img.Digest {
		t.Fatalf("the pinned image after prune, offline: %v %v", got, err)
	}
	checkLayers(t, got, testenv.BusyboxImage(t))
	if freed, kept, err := s.PruneKeeping(nil); err != nil || freed == 0 || len(kept) != 0 {
		t.Fatalf("prune with nothing pinned: %d %v %v", freed, kept, err)
	}
	if _, err := s.Get(ctx, pinned, PullNever); !errors.Is(err, ErrNotStored) {
		t.Fatalf("after the last prune: %v", err)
	}
}

// A size cap refuses an image whose manifest says it is larger before a
// layer is fetched, and a stored image larger than the cap.
func TestPullMaxBytes(t *testing.T) {
	r := testenv.StartRegistry(t)
	ref := r.PushBusybox(t, "test/busybox:cap")
	s, _ := newStore(t)
	ctx := context.Background()
	_, err := s.Pull(ctx, ref, PullOptions{MaxBytes: 1 << 10})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "more than the 0.0 MiB allowed") {
		t.Fatalf("pull over the cap: %v", err)
	}
	blobs := func() int {
		b, _ := filepath.Glob(filepath.Join(s.blobDir(), "*"))
		return len(b)
	}
	if n := blobs(); n != 0 {
		t.Errorf("a refused pull stored %d blobs", n)
	}
	img, err := s.Pull(ctx, ref, PullOptions{MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if blobs() == 0 {
		t.Fatal("no blobs found after a pull: the check above looks in the wrong place")
	}
	if _, err := s.GetWithOptions(ctx, ref, PullMissing, PullOptions{MaxBytes: img.Size - 1}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("a stored image over the cap: %v", err)
	}
	if _, err := s.GetWithOptions(ctx, ref, PullMissing, PullOptions{MaxBytes: img.Size}); err != nil {
		t.Errorf("a stored image at the cap: %v", err)
	}
}
