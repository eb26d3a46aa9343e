package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/microagent-dev/microagent/internal/imagebuild"
)

// PythonBinary is Debian's python3 interpreter (package python3-minimal).
const PythonBinary = "/usr/bin/python3.11"

// CurlBinary is Debian's curl (with HTTP/2 through libnghttp2).
const CurlBinary = "/usr/bin/curl"

// hostCABundle is the host's (Debian's) trust bundle, copied into images
// that make TLS connections.
const hostCABundle = "/etc/ssl/certs/ca-certificates.crt"

// pythonSkip are parts of the standard library no test needs.
var pythonSkip = map[string]bool{
	"test": true, "idlelib": true, "tkinter": true, "ensurepip": true, "lib2to3": true,
	"pydoc_data": true, "distutils": true, "unittest": true, "site-packages": true,
	"dist-packages": true, "__pycache__": true, "turtledemo": true,
}

// PythonImage returns the busybox image plus a real python3 (the host's
// Debian interpreter, its shared libraries and the core of its standard
// library), standing in for python:3.12-alpine in the spec's transcript.
func PythonImage(t testing.TB) v1.Image {
	t.Helper()
	RequireTool(t, PythonBinary)
	return fixture(t, "python", func() (v1.Image, error) {
		var h hostTree
		if err := h.addPython(); err != nil {
			return nil, err
		}
		return h.image([]string{"python3"})
	})
}

// HTTPSClientsImage returns the busybox image plus the host's curl and
// python3 (with its ssl module) and the host's trust bundle at Debian's
// path: HTTPS clients from packages, as an agent's image has them.
func HTTPSClientsImage(t testing.TB) v1.Image {
	t.Helper()
	RequireTool(t, PythonBinary)
	RequireTool(t, CurlBinary)
	return fixture(t, "https-clients", func() (v1.Image, error) {
		var h hostTree
		if err := h.addPython(); err != nil {
			return nil, err
		}
		if err := h.addBinary(CurlBinary); err != nil {
			return nil, err
		}
		if err := h.addFile(hostCABundle, hostCABundle, 0o644); err != nil {
			return nil, err
		}
		return h.image([]string{"/bin/sh"})
	})
}

// hostTree is an image layer of host files at their own paths.
type hostTree struct {
	entries []imagebuild.Entry
	seen    map[string]bool
}

func (h *hostTree) addDirs(p string) {
	if h.seen == nil {
		h.seen = map[string]bool{}
	}
	var parts []string
	for d := filepath.Dir(p); d != "." && d != "/"; d = filepath.Dir(d) {
		parts = append([]string{d}, parts...)
	}
	for _, d := range parts {
		if !h.seen[d] {
			h.seen[d] = true
			h.entries = append(h.entries, imagebuild.Dir(strings.TrimPrefix(d, "/"), 0o755, 0, 0))
		}
	}
}

// addFile puts the host file src at dst (once).
func (h *hostTree) addFile(src, dst string, mode int64) error {
	if h.seen[dst] {
		return nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	h.addDirs(dst)
	h.seen[dst] = true
	h.entries = append(h.entries, imagebuild.File(strings.TrimPrefix(dst, "/"), string(b), mode, 0, 0))
	return nil
}

// addBinary puts an executable or shared object and the libraries ldd
// says it loads (the loader included) at their paths.
func (h *hostTree) addBinary(p string) error {
	if err := h.addFile(p, p, 0o755); err != nil {
		return err
	}
	out, err := exec.Command("ldd", p).Output()
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				real, err := filepath.EvalSymlinks(f)
				if err != nil {
					return err
				}
				if err := h.addFile(real, f, 0o755); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// addPython adds the interpreter and the core of its standard library,
// with the libraries its extension modules load (libssl for ssl).
func (h *hostTree) addPython() error {
	if err := h.addBinary(PythonBinary); err != nil {
		return err
	}
	h.entries = append(h.entries, imagebuild.Symlink("usr/bin/python3", "python3.11"))
	lib := "/usr/lib/python3.11"
	return filepath.Walk(lib, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			if pythonSkip[fi.Name()] || strings.HasPrefix(fi.Name(), "config-") {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case !fi.Mode().IsRegular():
		case strings.HasSuffix(p, ".so"):
			return h.addBinary(p)
		case strings.HasSuffix(p, ".py"):
			return h.addFile(p, p, 0o644)
		}
		return nil
	})
}

func (h *hostTree) image(cmd []string) (v1.Image, error) {
	base, err := imagebuild.BaseEntries()
	if err != nil {
		return nil, err
	}
	return imagebuild.Build(v1.Config{Env: []string{DefaultPath}, Cmd: cmd}, base, h.entries)
}
