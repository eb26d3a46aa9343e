package hostcheck

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

func names(checks []Check) []string {
	var n []string
	for _, c := range checks {
		n = append(n, c.Name)
	}
	return n
}

func byName(t *testing.T, checks []Check, name string) Check {
	t.Helper()
	i := slices.IndexFunc(checks, func(c Check) bool { return c.Name == name })
	if i < 0 {
		t.Fatalf("no %q check in %q", name, names(checks))
	}
	return checks[i]
}

// The checks come in doctor's order, the backend's first; a state
// directory without a kernel is a warning, not a failure.
func TestChecks(t *testing.T) {
	ctx := context.Background()
	h := home.Home{Root: filepath.Join(t.TempDir(), "state")}
	checks := Checks(ctx, Options{Home: h}) // the default backend: qemu, linked in by the import
	want := []string{"qemu", "accelerator", "user network", "mkfs.ext4", "guest agent", "kernel", "state directory", "free disk"}
	if !slices.Equal(names(checks), want) {
		t.Fatalf("checks %q, want %q", names(checks), want)
	}
	if c := byName(t, checks, "state directory"); !c.OK || c.Detail != h.Root {
		t.Errorf("state directory: %+v", c)
	}
	if fi, err := os.Stat(h.Root); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory not created 0700: %v %v", fi, err)
	}
	if c := byName(t, checks, "kernel"); c.OK || c.Fatal || c.Fix != "microagent kernel install" {
		t.Errorf("kernel in an empty state directory: %+v", c)
	}
	if c := byName(t, checks, "free disk"); c.OK != (c.Fix == "") {
		t.Errorf("free disk: %+v", c)
	}
	// A backend given explicitly brings its own checks.
	slirp := Checks(ctx, Options{Home: h, Backend: qemu.New(qemu.Options{UserNet: qemu.UserNetSlirp})})
	if c := byName(t, slirp, "user network"); c.OK || c.Fatal || c.Detail != qemu.SlirpFallback {
		t.Errorf("user network with slirp: %+v", c)
	}
}

// A state directory that cannot be created fails fatally, and the free
// disk check is skipped.
func TestChecksUnwritableState(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root can write anywhere")
	}
	ro := t.TempDir()
	if err := os.Chmod(ro, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(ro, 0o700) })
	checks := Checks(context.Background(), Options{Home: home.Home{Root: filepath.Join(ro, "state")}})
	if c := byName(t, checks, "state directory"); c.OK || !c.Fatal {
		t.Errorf("unwritable state directory: %+v", c)
	}
	if slices.Contains(names(checks), "free disk") {
		t.Errorf("free disk checked without a state directory: %q", names(checks))
	}
	if !Fatal(checks) {
		t.Error("Fatal: false with a fatal failure")
	}
}

// Fatal counts only failures marked fatal: warnings and passes with a fix
// (TCG's "for KVM...") are not.
func TestFatal(t *testing.T) {
	if Fatal([]Check{{Name: "a", OK: true, Fix: "better", Fatal: true}, {Name: "b", Fix: "warn"}}) {
		t.Error("a pass and a warning are fatal")
	}
	if !Fatal([]Check{{Name: "a", OK: true}, {Name: "b", Fatal: true}}) {
		t.Error("a fatal failure is not fatal")
	}
}
