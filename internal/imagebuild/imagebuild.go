// Package imagebuild builds small OCI images from Debian's static busybox:
// the fixtures of the test suite and the image of the README's first run.
// Images are reproducible: fixed timestamps give the same digests on every
// build.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is Debian's static busybox (package busybox-static).
const BusyboxPath = "/bin/busybox"

// DefaultPath is the PATH set in every image's config.
const DefaultPath = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"

// The base root filesystem's users.
const (
	// PasswdContent is /etc/passwd.
	PasswdContent = "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/home/agent:/bin/sh\n"
	// GroupContent is /etc/group.
	GroupContent = "root:x:0:\nagent:x:1000:\n"
)

// FixedTime is the timestamp of every file and image built here.
var FixedTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

var (
	appletMu   sync.Mutex
	appletList []string
)

// Busybox returns the one-layer busybox image: the base root filesystem,
// Env PATH, Cmd ["/bin/sh"].
func Busybox() (v1.Image, error) {
	base, err := BaseEntries()
	if err != nil {
		return nil, err
	}
	return Build(v1.Config{Env: []string{DefaultPath}, Cmd: []string{"/bin/sh"}}, base)
}

// Entry is one tar member of a layer.
type Entry struct {
	Hdr  tar.Header
	Body string
}

// Dir is a directory entry.
func Dir(name string, mode int64, uid, gid int) Entry {
	return Entry{Hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: gid}}
}

// File is a regular file entry.
func File(name, body string, mode int64, uid, gid int) Entry {
	return Entry{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: gid}, Body: body}
}

// Symlink is a symbolic link entry.
func Symlink(name, target string) Entry {
	return Entry{Hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// BaseEntries is the base root filesystem: busybox, an applet link each,
// /etc/passwd and /etc/group (root and agent:1000), the usual folders.
func BaseEntries() ([]Entry, error) {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("%w: install it with `apt-get install --no-install-recommends busybox-static`", err)
	}
	ef, err := elf.NewFile(bytes.NewReader(bb))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", BusyboxPath, err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("%s is dynamically linked; the guest needs busybox-static", BusyboxPath)
		}
	}
	applets, err := busyboxApplets()
	if err != nil {
		return nil, err
	}
	es := []Entry{
		Dir("bin", 0o755, 0, 0),
		Dir("sbin", 0o755, 0, 0),
		Dir("usr", 0o755, 0, 0),
		Dir("usr/bin", 0o755, 0, 0),
		Dir("usr/sbin", 0o755, 0, 0),
		Dir("etc", 0o755, 0, 0),
		Dir("dev", 0o755, 0, 0),
		Dir("proc", 0o555, 0, 0),
		Dir("sys", 0o555, 0, 0),
		Dir("run", 0o755, 0, 0),
		Dir("var", 0o755, 0, 0),
		Dir("home", 0o755, 0, 0),
		Dir("root", 0o700, 0, 0),
		Dir("tmp", 0o1777, 0, 0),
		File("bin/busybox", string(bb), 0o755, 0, 0),
		File("etc/passwd", PasswdContent, 0o644, 0, 0),
		File("etc/group", GroupContent, 0o644, 0, 0),
	}
	for _, a := range applets {
		es = append(es, Symlink(a, "/bin/busybox"))
	}
	return es, nil
}

// busyboxApplets lists the applet paths ("bin/sh", "usr/bin/awk", ...) of
// the host's busybox, once.
func busyboxApplets() ([]string, error) {
	appletMu.Lock()
	defer appletMu.Unlock()
	if appletList != nil {
		return appletList, nil
	}
	out, err := exec.Command(BusyboxPath, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", BusyboxPath, err)
	}
	var list []string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		// linuxrc (the only applet outside a bin folder) and busybox
		// itself are not wanted as links.
		if l == "" || !strings.Contains(l, "/") || path.Base(l) == "busybox" {
			continue
		}
		list = append(list, l)
	}
	appletList = list
	return list, nil
}

// TarLayer serializes entries into an uncompressed tar.
func TarLayer(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Hdr
		h.ModTime = FixedTime
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if h.Uid == 0 && h.Gid == 0 {
			h.Uname, h.Gname = "root", "root"
		}
		if len(h.PAXRecords) > 0 {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", h.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.Body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Build makes a linux/amd64 OCI image (OCI manifest, config and gzip
// layer media types) from cfg and the layers, in order.
func Build(cfg v1.Config, layers ...[]Entry) (v1.Image, error) {
	return BuildWith(cfg, []tarball.LayerOption{tarball.WithMediaType(types.OCILayer)}, types.OCILayer, layers...)
}

// BuildWith is Build with the given layer options and layer media type.
func BuildWith(cfg v1.Config, lopts []tarball.LayerOption, mt types.MediaType, layers ...[]Entry) (v1.Image, error) {
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: FixedTime},
		Config:       cfg,
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	for i, es := range layers {
		data, err := TarLayer(es)
		if err != nil {
			return nil, err
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}, append(lopts, tarball.WithCompressedCaching)...)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i+1, err)
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:     l,
			MediaType: mt,
			History:   v1.History{Created: v1.Time{Time: FixedTime}, CreatedBy: fmt.Sprintf("imagebuild layer %d", i+1)},
		})
		if err != nil {
			return nil, err
		}
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	// Compute digests now, so a broken fixture fails here and not in the
	// middle of a test.
	if _, err := img.Digest(); err != nil {
		return nil, err
	}
	return img, nil
}
