package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/internal/testenv"
)

// storeImage puts img into a fresh store (through an OCI archive, so no
// registry is needed) and returns it.
func storeImage(t *testing.T, img v1.Image, ref string) (home.Home, *image.Image) {
	t.Helper()
	h := home.Home{Root: t.TempDir()}
	s, err := image.OpenStore(h)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "img.tar")
	testenv.WriteOCILayoutTar(t, img, ref, archive)
	imgs, err := s.Load(context.Background(), archive)
	if err != nil {
		t.Fatal(err)
	}
	return h, imgs[0]
}

// debugfs runs one debugfs request against an ext4 image.
func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	bin := testenv.RequireTool(t, "debugfs")
	out, err := exec.Command(bin, "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v: %s", req, err, out)
	}
	// Drop the version banner.
	return regexp.MustCompile(`(?m)^debugfs [0-9.]+ \(.*\)\n`).ReplaceAllString(string(out), "")
}

func expectMatch(t *testing.T, what, out, pattern string) {
	t.Helper()
	if !regexp.MustCompile(pattern).MatchString(out) {
		t.Errorf("%s: no match for %q in:\n%s", what, pattern, out)
	}
}

func TestEnsureWhiteoutImage(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	h, img := storeImage(t, testenv.WhiteoutImage(t), "example.com/whiteout:1")
	start := time.Now()
	p, err := Ensure(context.Background(), h, img)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %v", filepath.Base(p), time.Since(start))
	if p != h.Path(home.RootfsDir, img.Digest.Hex+".ext4") {
		t.Errorf("path %s", p)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat %s: %v %v", p, fi, err)
	}

	// Whiteouts applied.
	for _, gone := range []string{testenv.WhiteoutDeletedFile, testenv.OpaqueHiddenFile, testenv.OpaqueHiddenDir} {
		out := debugfs(t, p, "stat "+gone)
		expectMatch(t, gone, out, `File not found`)
	}
	if got := debugfs(t, p, "cat "+testenv.WhiteoutKeptFile); got != testenv.WhiteoutKeptContent {
		t.Errorf("kept file content %q", got)
	}
	if got := debugfs(t, p, "cat "+testenv.OpaqueNewFile); got != testenv.OpaqueNewContent {
		t.Errorf("opaque dir's new file %q", got)
	}
	// No overlay-style whiteout leftovers.
	if out := debugfs(t, p, "ls -l "+testenv.OpaqueDir); strings.Contains(out, ".wh.") {
		t.Errorf("whiteout marker in %s:\n%s", testenv.OpaqueDir, out)
	}

	expectMatch(t, "setuid", debugfs(t, p, "stat "+testenv.SetuidFile), `Mode:\s+04755`)
	owned := debugfs(t, p, "stat "+testenv.OwnedFile)
	expectMatch(t, "owner", owned, fmt.Sprintf(`User:\s+%d\s+Group:\s+%d`, testenv.OwnedUID, testenv.OwnedGID))
	expectMatch(t, "owner mode", owned, `Mode:\s+0640`)
	expectMatch(t, "symlink", debugfs(t, p, "stat "+testenv.SymlinkName), `Type: symlink[\s\S]*Fast link dest: "`+testenv.SymlinkTarget+`"`)
	dev := debugfs(t, p, "stat "+testenv.CharDevice)
	expectMatch(t, "device", dev, `Type: character special`)
	expectMatch(t, "device numbers", dev, fmt.Sprintf(`Device major/minor number: %02d:%02d`, testenv.CharDeviceMajor, testenv.CharDeviceMinor))
	expectMatch(t, "xattr", debugfs(t, p, "ea_get "+testenv.XattrFile+" "+testenv.XattrName), regexp.QuoteMeta(testenv.XattrName)+` \(\d+\) = "`+testenv.XattrValue+`"`)

	// The hard link shares its target's inode.
	inode := regexp.MustCompile(`Inode: (\d+)`)
	a := inode.FindStringSubmatch(debugfs(t, p, "stat "+testenv.HardLinkTarget))
	b := inode.FindStringSubmatch(debugfs(t, p, "stat "+testenv.HardLinkName))
	if a == nil || b == nil || a[1] != b[1] {
		t.Errorf("hard link inodes %v %v", a, b)
	}
	expectMatch(t, "link count", debugfs(t, p, "stat "+testenv.HardLinkName), `Links: 2`)
	if got := debugfs(t, p, "cat "+testenv.HardLinkName); got != testenv.HardLinkContent {
		t.Errorf("hard link content %q", got)
	}

	// The base image's essentials.
	expectMatch(t, "/tmp", debugfs(t, p, "stat /tmp"), `Mode:\s+01777`)
	expectMatch(t, "/bin/sh", debugfs(t, p, "stat /bin/sh"), `Fast link dest: "/bin/busybox"`)
	if got := debugfs(t, p, "cat /etc/passwd"); got != testenv.PasswdContent {
		t.Errorf("/etc/passwd %q", got)
	}
	expectMatch(t, "/etc/hostname", debugfs(t, p, "stat /etc/hostname"), `File not found`)

	// The file system is consistent.
	fsck := testenv.RequireTool(t, "e2fsck")
	out, err := exec.Command(fsck, "-fn", p).CombinedOutput()
	t.Logf("e2fsck -fn: %v\n%s", err, out)
	if err != nil {
		// tar2ext4 leaves the inode bitmap padding unset, which e2fsck
		// reports (harmless, see measurements); anything else fails.
		rest := regexp.MustCompile(`(?m)^(Padding at end of inode bitmap is not set\..*|e2fsck .*|Pass \d.*|.*: \d+/\d+ files.*|\s*|.*\*\*\*\*\*.*|.*WARNING.*|Fix\? no)$`).ReplaceAllString(string(out), "")
		if strings.TrimSpace(rest) != "" {
			t.Errorf("e2fsck -fn: %v:\n%s", err, out)
		}
	}
}

func TestEnsureCached(t *testing.T) {
	h, img := storeImage(t, testenv.BusyboxImage(t), "example.com/busybox:1")
	ctx := context.Background()
	p, err := Ensure(ctx, h, img)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p2, err := Ensure(ctx, h, img)
	took := time.Since(start)
	if err != nil || p2 != p {
		t.Fatalf("second Ensure: %q, %v", p2, err)
	}
	fi, _ := os.Stat(p)
	if !fi.ModTime().Equal(old) {
		t.Errorf("rebuilt: mtime %v, want %v", fi.ModTime(), old)
	}
	if took > 50*time.Millisecond {
		t.Errorf("cache hit took %v", took)
	}
	t.Logf("cache hit: %v", took)
}

func TestEnsureConcurrent(t *testing.T) {
	h, img := storeImage(t, testenv.BusyboxImage(t), "example.com/busybox:1")
	var wg sync.WaitGroup
	paths := make([]string, 3)
	errs := make([]error, 3)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = Ensure(context.Background(), h, img)
		}()
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Fatalf("Ensure %d: %q, %v", i, paths[i], errs[i])
		}
	}
	assertOnlyDisks(t, h, 1)
	expectMatch(t, "busybox", debugfs(t, paths[0], "stat /bin/busybox"), `Mode:\s+0755`)
}

// assertOnlyDisks checks that rootfs/ holds n disks, lock files and nothing
// else (no temporary files).
func assertOnlyDisks(t *testing.T, h home.Home, n int) {
	t.Helper()
	entries, err := os.ReadDir(h.Path(home.RootfsDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	disks := 0
	for _, e := range entries {
		switch {
		case strings.HasSuffix(e.Name(), ".lock"):
		case strings.HasSuffix(e.Name(), ".ext4") && !strings.HasPrefix(e.Name(), tmpPrefix):
			disks++
		default:
			t.Errorf("unexpected file in rootfs/: %s", e.Name())
		}
	}
	if disks != n {
		t.Errorf("%d disks in rootfs/, want %d", disks, n)
	}
}

func TestEnsureCancelled(t *testing.T) {
	h, img := storeImage(t, testenv.BusyboxImage(t), "example.com/busybox:1")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Ensure(ctx, h, img); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Ensure: %v", err)
	}
	assertOnlyDisks(t, h, 0)
}

func TestBuildCancelledMidway(t *testing.T) {
	base := testenv.BusyboxImage(t)
	layers, err := base.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The layer cancels the context after 512 KiB of its 2 MB.
	img, err := mutate.AppendLayers(empty.Image, &cancellingLayer{Layer: layers[0], after: 512 << 10, cancel: cancel})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	err = Build(ctx, img, filepath.Join(dir, "x.ext4"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Build: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

type cancellingLayer struct {
	v1.Layer
	after  int64
	cancel func()
}

func (c *cancellingLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := c.Layer.Uncompressed()
	if err != nil {
		return nil, err
	}
	return &cancelAfter{ReadCloser: rc, left: c.after, cancel: c.cancel}, nil
}

type cancelAfter struct {
	io.ReadCloser
	left   int64
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.left -= int64(n)
	if c.left <= 0 {
		c.cancel()
	}
	return n, err
}

// layerOf builds an uncompressed tar layer from headers (regular files get
// their name as content).
func layerOf(t *testing.T, hdrs ...tar.Header) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		body := ""
		if h.Typeflag == tar.TypeReg {
			body = h.Name
			h.Size = int64(len(body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(tw, body)
	}
	_ = tw.Close()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestCrossLayerHardLink(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	lower := layerOf(t,
		tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755},
		tar.Header{Typeflag: tar.TypeReg, Name: "d/target"},
	)
	upper := layerOf(t, tar.Header{Typeflag: tar.TypeLink, Name: "e/link", Linkname: "d/target"},
		tar.Header{Typeflag: tar.TypeDir, Name: "e/", Mode: 0o700})
	img, err := mutate.AppendLayers(empty.Image, lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "x.ext4")
	if err := Build(context.Background(), img, dst); err != nil {
		t.Fatal(err)
	}
	expectMatch(t, "link", debugfs(t, dst, "stat /e/link"), `Links: 2`)
	expectMatch(t, "dir mode", debugfs(t, dst, "stat /e"), `Mode:\s+0700`)
	if got := debugfs(t, dst, "cat /e/link"); got != "d/target" {
		t.Errorf("link content %q", got)
	}

	// A link whose target a later layer deleted cannot be built.
	both := layerOf(t, tar.Header{Typeflag: tar.TypeReg, Name: "a"}, tar.Header{Typeflag: tar.TypeLink, Name: "b", Linkname: "a"})
	del := layerOf(t, tar.Header{Typeflag: tar.TypeReg, Name: ".wh.a"})
	img, _ = mutate.AppendLayers(empty.Image, both, del)
	dst = filepath.Join(t.TempDir(), "y.ext4")
	err = Build(context.Background(), img, dst)
	if err == nil || !strings.Contains(err.Error(), "hard link /b -> /a") {
		t.Fatalf("dangling link: %v", err)
	}
	if _, err := os.Stat(dst); err == nil {
		t.Error("a failed build left its output")
	}
}

func TestPrune(t *testing.T) {
	h, keepImg := storeImage(t, testenv.BusyboxImage(t), "example.com/keep:1")
	s, err := image.OpenStore(h)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "u.tar")
	testenv.WriteOCILayoutTar(t, testenv.UserImage(t), "example.com/drop:1", archive)
	loaded, err := s.Load(context.Background(), archive)
	if err != nil {
		t.Fatal(err)
	}
	dropImg := loaded[0]
	keepPath, err := Ensure(context.Background(), h, keepImg)
	if err != nil {
		t.Fatal(err)
	}
	dropPath, err := Ensure(context.Background(), h, dropImg)
	if err != nil {
		t.Fatal(err)
	}
	stray := h.Path(home.RootfsDir, tmpPrefix+keepImg.Digest.Hex+".ext4-123")
	if err := os.WriteFile(stray, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(dropImg.Ref); err != nil {
		t.Fatal(err)
	}
	freed, err := Prune(h, s)
	if err != nil {
		t.Fatal(err)
	}
	if freed < 1<<20 {
		t.Errorf("freed %d bytes", freed)
	}
	for p, want := range map[string]bool{keepPath: true, dropPath: false, stray: false} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s: exists=%v, want %v", filepath.Base(p), err == nil, want)
		}
	}
}
