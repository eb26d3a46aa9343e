// Package testenv provides real test fixtures shared by microagent's tests: a
// local OCI registry (Debian's docker-registry) and small OCI images built
// from Debian's static busybox.
//
// Tests that need an external tool call RequireTool (or StartRegistry, which
// does). Such a test is skipped when the tool is missing, except under
// CI=true, where a missing tool is a failure naming the apt package to
// install, so CI can never pass by skipping everything. RequireRoot and
// SkipOrFail apply the same rule to other missing pieces (root, a port, a
// binary found elsewhere than on PATH).
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/internal/fsutil"
)

// toolPackages maps a tool to the Debian package that installs it, for the
// message shown when the tool is missing.
var toolPackages = map[string]string{
	"docker-registry":    "docker-registry",
	"etcd":               "etcd-server",
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
	"passt":              "passt",
	"dpkg-deb":           "dpkg",
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
	SkipOrFail(t, "%s", msg)
}

// SkipOrFail skips the test because a piece of its environment is missing,
// or, under CI=true, fails it: CI installs every piece, so there a missing
// one is a broken setup, not a reason to pass.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatal(msg)
		return
	}
	t.Skip(msg)
}

// RequireRoot skips the test (or fails it under CI=true) unless it runs as
// root; why says what needs root.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root: %s", why)
	}
}

// CacheDir is where tests keep downloads and builds across runs (the
// kernel's .deb, the installed test kernel), shared by every package's
// tests and by parallel test processes.
func CacheDir() string { return filepath.Join(os.TempDir(), "microagent-test-cache") }

// ToolCacheDirs returns the folders scripts/install-TOOL.sh may have built
// tool into, in the script's order of preference: $MICROAGENT_<TOOL>_CACHE,
// $XDG_CACHE_HOME/microagent/TOOL, /var/cache/microagent/TOOL (the script's
// choice as root), $HOME/.cache/microagent/TOOL.
func ToolCacheDirs(tool string) []string {
	var dirs []string
	if d := os.Getenv("MICROAGENT_" + strings.ToUpper(tool) + "_CACHE"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		dirs = append(dirs, filepath.Join(d, "microagent", tool))
	}
	dirs = append(dirs, filepath.Join("/var/cache/microagent", tool))
	if h, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(h, ".cache", "microagent", tool))
	}
	return dirs
}

// RequireKernelInstall checks the tools a real kernel.Install with
// InstallOptions.CacheDir cacheDir needs: dpkg-deb always, and apt-get
// unless the pinned .deb, debSHA256 (kernel.DefaultDebSHA256), is cached
// there intact. testenv cannot import kernel (kernel's tests use testenv),
// hence the hash as an argument.
func RequireKernelInstall(t testing.TB, cacheDir, debSHA256 string) {
	t.Helper()
	for _, tool := range kernelInstallTools(cacheDir, debSHA256) {
		RequireTool(t, tool)
	}
}

// kernelInstallTools lists the tools RequireKernelInstall requires.
func kernelInstallTools(cacheDir, debSHA256 string) []string {
	if sum, err := fsutil.SHA256File(filepath.Join(cacheDir, debSHA256+".deb")); err == nil && sum == debSHA256 {
		return []string{"dpkg-deb"}
	}
	return []string{"dpkg-deb", "apt-get"}
}
