package vmm

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
)

// named is a backend that only has a name: the registry never starts one.
type named string

func (n named) Name() string { return string(n) }

func (n named) Start(context.Context, Config) (Machine, error) { panic("not started by these tests") }

// withRegistry runs the test on an empty registry and restores the real
// one (the backends linked into the test binary) afterwards.
func withRegistry(t *testing.T) {
	registryMu.Lock()
	saved := maps.Clone(registry)
	clear(registry)
	registryMu.Unlock()
	t.Cleanup(func() {
		registryMu.Lock()
		registry = saved
		registryMu.Unlock()
	})
}

func TestRegistry(t *testing.T) {
	withRegistry(t)
	if _, err := Default(); err == nil || !strings.Contains(err.Error(), "none is registered") {
		t.Errorf("Default with no backend: %v", err)
	}
	Register("one", func() Backend { return named("one") })
	if b, err := Default(); err != nil || b.Name() != "one" {
		t.Errorf("Default with one backend: %v, %v", b, err)
	}
	Register("two", func() Backend { return named("two") })
	if got := Names(); !slices.Equal(got, []string{"one", "two"}) {
		t.Errorf("Names() = %q", got)
	}
	// Two backends: no silent pick by import order.
	if _, err := Default(); err == nil || !strings.Contains(err.Error(), "one, two: choose one by name") {
		t.Errorf("Default with two backends: %v", err)
	}
	if b, err := Lookup("two"); err != nil || b.Name() != "two" {
		t.Errorf("Lookup(two) = %v, %v", b, err)
	}
	if _, err := Lookup("three"); err == nil || !strings.Contains(err.Error(), `"three"`) || !strings.Contains(err.Error(), "one, two") {
		t.Errorf("Lookup(three): %v", err)
	}
	for name, f := range map[string]func(){
		"twice":   func() { Register("one", func() Backend { return named("one") }) },
		"no name": func() { Register("", func() Backend { return named("") }) },
		"nil":     func() { Register("nil", nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register %s did not panic", name)
				}
			}()
			f()
		}()
	}
}

func TestIdentityDiff(t *testing.T) {
	a := Identity{Backend: "qemu", Accel: "kvm", CPU: "host: X", Devices: "virtio-blk:2"}
	if d := a.Diff(a); len(d) != 0 {
		t.Errorf("same identity differs: %q", d)
	}
	b := a
	b.Accel, b.CPU = "tcg", "max"
	want := []string{"accelerator kvm, now tcg", "CPU host: X, now max"}
	if d := a.Diff(b); !slices.Equal(d, want) {
		t.Errorf("Diff = %q, want %q", d, want)
	}
}
