package packaging

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/internal/testenv"
)

// binaries are the three programs every install and package ships together.
var binaries = []string{"microagent", "microagent-net", "microagent-agent", "microagent-node"}

// repoRoot is the repository, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "Makefile")); err != nil {
		t.Fatalf("no Makefile at %s: %v", root, err)
	}
	return root
}

// makeTarget runs make in the repository with its output in the test log.
// BIN and DIST point into the test's temp folder so that the tree is left
// as it was.
func makeTarget(t *testing.T, args ...string) {
	t.Helper()
	testenv.RequireTool(t, "make")
	testenv.RequireTool(t, "go")
	cmd := exec.Command("make", append([]string{"-C", repoRoot(t)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// gitVersion is what the Makefile stamps into the binary.
func gitVersion(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "-C", repoRoot(t), "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err) // the Makefile then says "dev"; nothing to compare
	}
	return strings.TrimSpace(string(out))
}

// make install PREFIX=DIR puts the three binaries side by side in DIR/bin,
// and the installed CLI finds its guest agent and network helper there.
func TestMakeInstall(t *testing.T) {
	version := gitVersion(t)
	tmp := t.TempDir()
	prefix := filepath.Join(tmp, "prefix")
	makeTarget(t, "install", "PREFIX="+prefix, "BIN="+filepath.Join(tmp, "build"))
	for _, b := range binaries {
		fi, err := os.Stat(filepath.Join(prefix, "bin", b))
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("%s: %v %v", b, fi, err)
		}
	}
	cli := filepath.Join(prefix, "bin", "microagent")

	// The environment names no agent or helper: the CLI finds them beside itself.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MICROAGENT_") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(cli, "doctor", "--json", "--state-dir", filepath.Join(tmp, "state"))
	cmd.Env = env
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) { // doctor exits 1 when the host cannot run VMs; its report still counts
		t.Fatal(err)
	}
	var report struct {
		Checks []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	found := map[string]string{}
	for _, c := range report.Checks {
		if c.OK {
			found[c.Name] = c.Detail
		}
	}
	if got, want := found["guest agent"], filepath.Join(prefix, "bin", "microagent-agent"); got != want {
		t.Errorf("doctor's guest agent = %q, want %q\n%s", got, want, out)
	}
	if got, want := found["user network"], filepath.Join(prefix, "bin", "microagent-net"); !strings.HasPrefix(got, want+":") {
		t.Errorf("doctor's user network = %q, want the helper %s\n%s", got, want, out)
	}

	cmd = exec.Command(cli, "version", "--json")
	cmd.Env = env
	out, err = cmd.Output()
	var v struct {
		Version string `json:"version"`
	}
	if err != nil || json.Unmarshal(out, &v) != nil || v.Version != version {
		t.Errorf("version --json = %s (%v), want version %q", out, err, version)
	}
}

// make release writes a tarball and a .deb, each holding the three
// binaries, named after git describe.
func TestMakeRelease(t *testing.T) {
	version := gitVersion(t)
	dpkg := testenv.RequireTool(t, "dpkg-deb")
	tmp := t.TempDir()
	dist := filepath.Join(tmp, "dist")
	makeTarget(t, "release", "BIN="+filepath.Join(tmp, "build"), "DIST="+dist)

	tgz := filepath.Join(dist, "microagent-"+version+"-linux-amd64.tar.gz")
	top := "microagent-" + version + "-linux-amd64/"
	names := tarNames(t, tgz)
	for _, want := range []string{"bin/microagent", "bin/microagent-net", "bin/microagent-agent", "bin/microagent-node", "LICENSE", "README.md", "CHANGELOG.md", "SECURITY.md"} {
		if !slices.Contains(names, top+want) {
			t.Errorf("%s has no %s: %v", filepath.Base(tgz), top+want, names)
		}
	}

	debs, _ := filepath.Glob(filepath.Join(dist, "microagent_*_amd64.deb"))
	if len(debs) != 1 {
		t.Fatalf("want one .deb in %s, found %v", dist, debs)
	}
	list, err := exec.Command(dpkg, "-c", debs[0]).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb -c: %v\n%s", err, list)
	}
	for _, b := range binaries {
		ok := false
		for _, line := range strings.Split(string(list), "\n") {
			ok = ok || strings.HasSuffix(line, " ./usr/bin/"+b) && strings.HasPrefix(line, "-rwxr-xr-x root/root")
		}
		if !ok {
			t.Errorf("the .deb has no executable /usr/bin/%s owned by root:\n%s", b, list)
		}
	}
	fields, err := exec.Command(dpkg, "-f", debs[0], "Package", "Version", "Architecture", "Depends").CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb -f: %v\n%s", err, fields)
	}
	for _, want := range []string{"Package: microagent\n", "Architecture: amd64\n", "qemu-system-x86"} {
		if !strings.Contains(string(fields), want) {
			t.Errorf("control fields lack %q:\n%s", want, fields)
		}
	}
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil || !strings.Contains(string(sums), filepath.Base(tgz)) || !strings.Contains(string(sums), filepath.Base(debs[0])) {
		t.Errorf("SHA256SUMS = %q, %v", sums, err)
	}
}

// tarNames lists a gzipped tarball's entries.
func tarNames(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}
