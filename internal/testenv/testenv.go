// Package testenv provides real test fixtures shared by microagent's tests: a
// local OCI registry (Debian's docker-registry) and small OCI images built
// from Debian's static busybox.
//
// Tests that need an external tool call RequireTool (or StartRegistry, which
// does). Such a test is skipped when the tool is missing, except under
// CI=true, where a missing tool is a failure naming the apt package to
// install, so CI can never pass by skipping everything.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// toolPackages maps a tool to the Debian package that installs it, for the
// message shown when the tool is missing.
var toolPackages = map[string]string{
	"docker-registry":    "docker-registry",
	"busybox":            "busybox-static",
	"qemu-system-x86_64": "qemu-system-x86",
	"qemu-img":           "qemu-utils",
	"mkfs.ext4":          "e2fsprogs",
	"mke2fs":             "e2fsprogs",
	"debugfs":            "e2fsprogs",
	"e2fsck":             "e2fsprogs",
	"resize2fs":          "e2fsprogs",
	"tune2fs":            "e2fsprogs",
	"dumpe2fs":           "e2fsprogs",
}

// InCI reports whether the tests run under CI (CI=true), where missing tools
// are failures instead of skips.
func InCI() bool { return os.Getenv("CI") == "true" }

// LookTool finds an external tool on PATH or in the sbin folders (which a
// non-root PATH often lacks). It returns "" when the tool is missing.
func LookTool(name string) string {
	if filepath.IsAbs(name) {
		if fi, err := os.Stat(name); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return name
		}
		return ""
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// RequireTool returns the path of the external tool name. When the tool is
// missing the test is skipped, or, under CI=true, fails with the apt command
// that installs it.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	if p := LookTool(name); p != "" {
		return p
	}
	missing(t, fmt.Sprintf("%s not found", name), name)
	return ""
}

// missing skips (or under CI fails) the test because tool is unusable.
func missing(t testing.TB, what, tool string) {
	t.Helper()
	msg := fmt.Sprintf("%s: install the Debian package that provides it", what)
	if pkg := toolPackages[filepath.Base(tool)]; pkg != "" {
		msg = fmt.Sprintf("%s: install it with `apt-get install -y --no-install-recommends %s`", what, pkg)
	}
	if InCI() {
		t.Fatal(msg)
		return
	}
	t.Skip(msg)
}
