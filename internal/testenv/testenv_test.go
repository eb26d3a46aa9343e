package testenv

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestRegistryPushPull(t *testing.T) {
	r := StartRegistry(t)
	ref := r.PushBusybox(t, "test/busybox")
	if want := r.Host + "/test/busybox:latest"; ref != want {
		t.Fatalf("ref = %q, want %q", ref, want)
	}
	// Pushing again is cheap and yields the same digest.
	if again := r.PushBusybox(t, "test/busybox"); again != ref {
		t.Fatalf("second push ref = %q", again)
	}
	pref, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(pref)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := img.Digest()
	want, _ := BusyboxImage(t).Digest()
	if got != want {
		t.Fatalf("pulled digest %v, pushed %v", got, want)
	}
	mt, _ := img.MediaType()
	if mt != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("media type %q", mt)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.Config.Cmd) != 1 || cf.Config.Cmd[0] != "/bin/sh" || cf.Config.Env[0] != DefaultPath {
		t.Errorf("config %+v", cf.Config)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	if _, err := filepathStat(r.BlobPath(ld)); err != nil {
		t.Errorf("blob path: %v", err)
	}

	r.Stop()
	r.Stop()
	if _, err := http.Get(r.URL + "/v2/"); err == nil {
		t.Fatal("registry still answers after Stop")
	}
}

func TestWhiteoutImageLayers(t *testing.T) {
	img := WhiteoutImage(t)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 3 {
		t.Fatalf("%d layers", len(layers))
	}
	files := map[string]*tar.Header{}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files["/"+h.Name] = h
	}
	for _, p := range []string{WhiteoutDeletedFile, OpaqueHiddenFile, OpaqueHiddenDir} {
		if files[p] != nil {
			t.Errorf("%s present after flattening", p)
		}
	}
	for _, p := range []string{WhiteoutKeptFile, OpaqueNewFile, SetuidFile, HardLinkName, SymlinkName, XattrFile, CharDevice, OwnedFile, "/bin/sh", "/bin/busybox", "/etc/passwd"} {
		if files[p] == nil {
			t.Errorf("%s missing", p)
		}
	}
	if h := files[SetuidFile]; h != nil && h.Mode != SetuidMode {
		t.Errorf("setuid mode %o", h.Mode)
	}
	if h := files[XattrFile]; h != nil && h.PAXRecords["SCHILY.xattr."+XattrName] != XattrValue {
		t.Errorf("xattr records %v", h.PAXRecords)
	}
	if h := files["/tmp"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("/tmp: %+v", h)
	}
}

func TestArchives(t *testing.T) {
	img := UserImage(t)
	dir := t.TempDir()
	save := filepath.Join(dir, "save.tar")
	WriteDockerSave(t, img, "example.com/user:1", save)
	tag := name.MustParseReference("example.com/user:1").(name.Tag)
	loaded, err := tarball.ImageFromPath(save, &tag)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.ConfigName()
	if got, _ := loaded.ConfigName(); got != want {
		t.Fatalf("docker-save config %v, want %v", got, want)
	}
	WriteOCILayoutTar(t, img, "example.com/user:1", filepath.Join(dir, "oci.tar"))
}

func filepathStat(p string) (fs.FileInfo, error) { return os.Stat(p) }

// recTB records Skip and Fatal instead of stopping the test.
type recTB struct {
	testing.TB
	skipped, fatal string
}

func (r *recTB) Skip(args ...any)  { r.skipped = fmt.Sprint(args...) }
func (r *recTB) Fatal(args ...any) { r.fatal = fmt.Sprint(args...) }

func TestRequireToolMissing(t *testing.T) {
	t.Setenv("CI", "")
	r := &recTB{TB: t}
	if p := RequireTool(r, "no-such-tool-xyz"); p != "" || r.skipped == "" || r.fatal != "" {
		t.Errorf("outside CI: %q skipped=%q fatal=%q", p, r.skipped, r.fatal)
	}
	t.Setenv("CI", "true")
	r = &recTB{TB: t}
	RequireTool(r, "qemu-img-missing")
	if r.fatal == "" || r.skipped != "" {
		t.Errorf("under CI: skipped=%q fatal=%q", r.skipped, r.fatal)
	}
	r = &recTB{TB: t}
	RequireTool(r, "/nonexistent/mkfs.ext4")
	if !strings.Contains(r.fatal, "apt-get install -y --no-install-recommends e2fsprogs") {
		t.Errorf("message: %q", r.fatal)
	}
	if p := RequireTool(t, "sh"); p == "" {
		t.Error("sh not found")
	}
}

func TestSkipOrFail(t *testing.T) {
	t.Setenv("CI", "")
	r := &recTB{TB: t}
	SkipOrFail(r, "no %s here", "widget")
	if r.skipped != "no widget here" || r.fatal != "" {
		t.Errorf("outside CI: skipped=%q fatal=%q", r.skipped, r.fatal)
	}
	t.Setenv("CI", "true")
	r = &recTB{TB: t}
	SkipOrFail(r, "no %s here", "widget")
	if r.fatal != "no widget here" || r.skipped != "" {
		t.Errorf("under CI: skipped=%q fatal=%q", r.skipped, r.fatal)
	}
	r = &recTB{TB: t}
	RequireRoot(r, "to mount a tmpfs")
	if root := os.Geteuid() == 0; root != (r.fatal == "") || r.skipped != "" {
		t.Errorf("RequireRoot under CI, root %v: skipped=%q fatal=%q", root, r.skipped, r.fatal)
	}
	if r.fatal != "" && !strings.Contains(r.fatal, "to mount a tmpfs") {
		t.Errorf("RequireRoot message: %q", r.fatal)
	}
}

func TestToolCacheDirs(t *testing.T) {
	t.Setenv("HOME", "/home/tester")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	t.Setenv("MICROAGENT_SOPS_CACHE", "/explicit")
	want := []string{"/explicit", "/xdg/microagent/sops", "/var/cache/microagent/sops", "/home/tester/.cache/microagent/sops"}
	if got := ToolCacheDirs("sops"); !slices.Equal(got, want) {
		t.Errorf("all set: %q, want %q", got, want)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("MICROAGENT_SOPS_CACHE", "")
	want = []string{"/var/cache/microagent/sops", "/home/tester/.cache/microagent/sops"}
	if got := ToolCacheDirs("sops"); !slices.Equal(got, want) {
		t.Errorf("neither variable: %q, want %q", got, want)
	}
}

func TestKernelInstallTools(t *testing.T) {
	dir := t.TempDir()
	const content = "a kernel package"
	sum := sha256.Sum256([]byte(content))
	hash := hex.EncodeToString(sum[:])
	if got := kernelInstallTools(dir, hash); !slices.Equal(got, []string{"dpkg-deb", "apt-get"}) {
		t.Errorf("nothing cached: %v", got)
	}
	// A damaged cached .deb is downloaded again, so apt-get is still needed.
	if err := os.WriteFile(filepath.Join(dir, hash+".deb"), []byte("damaged"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := kernelInstallTools(dir, hash); !slices.Equal(got, []string{"dpkg-deb", "apt-get"}) {
		t.Errorf("damaged cache: %v", got)
	}
	if err := os.WriteFile(filepath.Join(dir, hash+".deb"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := kernelInstallTools(dir, hash); !slices.Equal(got, []string{"dpkg-deb"}) {
		t.Errorf("intact cache: %v", got)
	}
}

func TestPythonImage(t *testing.T) {
	img := PythonImage(t)
	ls, err := img.Layers()
	if err != nil || len(ls) != 2 {
		t.Fatalf("layers: %d %v", len(ls), err)
	}
}

// TestProcesses: the test binary sees itself, with its parent.
func TestProcesses(t *testing.T) {
	for _, p := range Processes() {
		if p.PID == os.Getpid() {
			if p.PPID != os.Getppid() || p.Comm == "" {
				t.Fatalf("self: %+v, want parent %d", p, os.Getppid())
			}
			return
		}
	}
	t.Fatal("this process is not listed")
}
