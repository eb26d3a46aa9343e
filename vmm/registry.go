package vmm

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

var (
	registryMu sync.RWMutex
	registry   = map[string]func() Backend{}
)

// Register makes a backend available by name: Lookup(name) returns
// newBackend(). A backend package registers itself in an init function, and
// the program picks the backends it ships by importing those packages (for
// their side effect only, as with database/sql drivers), so nothing above
// vmm names a monitor. name is what Backend.Name returns; it is recorded
// with a workspace and a snapshot, so it must never change. Registering a
// name twice, or a nil function, panics: both are programming errors that
// must not silently replace a backend.
func Register(name string, newBackend func() Backend) {
	if name == "" || newBackend == nil {
		panic(fmt.Sprintf("vmm: Register(%q): need a name and a constructor", name))
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic(fmt.Sprintf("vmm: Register called twice for backend %q", name))
	}
	registry[name] = newBackend
}

// Names returns the registered backends' names, sorted.
func Names() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Lookup returns a new backend of the registered name, or an error naming
// the registered ones.
func Lookup(name string) (Backend, error) {
	registryMu.RLock()
	newBackend, ok := registry[name]
	registryMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unknown VMM backend %q: %s", name, known())
	}
	return newBackend(), nil
}

// Default returns a new backend of the one registered backend, the backend
// a caller gets when it does not choose. The rule is "the only one" rather
// than "the first one" because registration order is import order, which
// nobody reads as a choice: with two backends linked in, callers must pick
// one by name (Lookup), and Default fails saying so.
func Default() (Backend, error) {
	names := Names()
	if len(names) != 1 {
		return nil, fmt.Errorf("no default VMM backend: %s", known())
	}
	return Lookup(names[0])
}

// known describes the registered backends for an error message.
func known() string {
	switch names := Names(); len(names) {
	case 0:
		return "none is registered (import a backend package such as vmm/qemu for its side effect)"
	case 1:
		return "the only registered one is " + names[0]
	default:
		return "the registered ones are " + strings.Join(names, ", ") + ": choose one by name"
	}
}
