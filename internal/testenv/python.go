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
		base, err := imagebuild.BaseEntries()
		if err != nil {
			return nil, err
		}
		var py []imagebuild.Entry
		seenDir := map[string]bool{}
		addDirs := func(p string) {
			var parts []string
			for d := filepath.Dir(p); d != "." && d != "/"; d = filepath.Dir(d) {
				parts = append([]string{d}, parts...)
			}
			for _, d := range parts {
				if !seenDir[d] {
					seenDir[d] = true
					py = append(py, imagebuild.Dir(strings.TrimPrefix(d, "/"), 0o755, 0, 0))
				}
			}
		}
		addFile := func(src, dst string, mode int64) error {
			b, err := os.ReadFile(src)
			if err != nil {
				return err
			}
			addDirs(dst)
			py = append(py, imagebuild.File(strings.TrimPrefix(dst, "/"), string(b), mode, 0, 0))
			return nil
		}
		if err := addFile(PythonBinary, PythonBinary, 0o755); err != nil {
			return nil, err
		}
		py = append(py, imagebuild.Symlink("usr/bin/python3", "python3.11"))
		out, err := exec.Command("ldd", PythonBinary).Output()
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(out), "\n") {
			for _, f := range strings.Fields(line) {
				if strings.HasPrefix(f, "/") {
					real, err := filepath.EvalSymlinks(f)
					if err != nil {
						return nil, err
					}
					if err := addFile(real, f, 0o755); err != nil {
						return nil, err
					}
				}
			}
		}
		lib := "/usr/lib/python3.11"
		err = filepath.Walk(lib, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if fi.IsDir() {
				if pythonSkip[fi.Name()] || strings.HasPrefix(fi.Name(), "config-") {
					return filepath.SkipDir
				}
				return nil
			}
			if fi.Mode().IsRegular() && (strings.HasSuffix(p, ".py") || strings.HasSuffix(p, ".so")) {
				return addFile(p, p, 0o644)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		return imagebuild.Build(v1.Config{Env: []string{DefaultPath}, Cmd: []string{"python3"}}, base, py)
	})
}
