package kernel

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// GuestModules are the modules the guest agent needs: virtio-mmio transport
// (microvm finds its devices through ACPI), the root and data disks, the
// agent's virtio-serial port, networking and the overlay root. Their
// dependencies are added by Install and FromPath.
var GuestModules = []string{"virtio_mmio", "virtio_blk", "virtio_console", "virtio_net", "overlay"}

// moduleName turns a module file name ("virtio-foo.ko") into the kernel's
// module name ("virtio_foo"): the kernel treats '-' and '_' alike and reports
// '_'.
func moduleName(file string) string {
	base := filepath.Base(file)
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(base, ext) {
			base = strings.TrimSuffix(base, ext)
			break
		}
	}
	return strings.ReplaceAll(base, "-", "_")
}

// moduleSet is what a folder of modules offers.
type moduleSet struct {
	dir        string
	files      map[string]string // module name -> path of its .ko
	compressed map[string]string // module name -> path of a compressed .ko.* we cannot load
	builtin    map[string]bool   // names listed in modules.builtin
}

// scanModules indexes every .ko under dir and reads dir/modules.builtin when
// present.
func scanModules(dir string) (*moduleSet, error) {
	ms := &moduleSet{dir: dir, files: map[string]string{}, compressed: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		name := d.Name()
		switch {
		case strings.HasSuffix(name, ".ko"):
			m := moduleName(name)
			if _, dup := ms.files[m]; !dup { // first one wins, as the walk is sorted
				ms.files[m] = p
			}
		case strings.Contains(name, ".ko."):
			ms.compressed[moduleName(name)] = p
		case name == "modules.builtin":
			if err := ms.readBuiltin(p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan modules in %s: %w", dir, err)
	}
	return ms, nil
}

// readBuiltin adds the modules listed in a modules.builtin file (one path
// like kernel/fs/ext4/ext4.ko per line).
func (ms *moduleSet) readBuiltin(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			ms.builtin[moduleName(line)] = true
		}
	}
	return sc.Err()
}

// modinfo returns the name and dependencies recorded in a module's .modinfo
// ELF section (NUL-separated key=value strings, as modpost writes them).
func modinfo(path string) (name string, depends []string, err error) {
	ef, err := elf.Open(path)
	if err != nil {
		return "", nil, fmt.Errorf("module %s: not an ELF object: %w", path, err)
	}
	defer ef.Close()
	sec := ef.Section(".modinfo")
	if sec == nil {
		return "", nil, fmt.Errorf("module %s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return "", nil, fmt.Errorf("module %s: read .modinfo: %w", path, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			name = v
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					depends = append(depends, moduleName(d))
				}
			}
		}
	}
	return name, depends, nil
}

// resolvedModule is one module to load, with the path of its .ko.
type resolvedModule struct {
	name string
	path string
}

// resolve returns the modules needed to load want, dependencies first.
// Modules built into the kernel are skipped; a missing one is an error.
func (ms *moduleSet) resolve(want []string) ([]resolvedModule, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []resolvedModule
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		if ms.builtin[name] {
			return nil
		}
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("modules in %s: dependency cycle %s", ms.dir, strings.Join(append(chain, name), " -> "))
		}
		path, ok := ms.files[name]
		if !ok {
			need := ""
			if len(chain) > 0 {
				need = fmt.Sprintf(" (needed by %s)", chain[len(chain)-1])
			}
			if c, ok := ms.compressed[name]; ok {
				return fmt.Errorf("module %s%s is compressed (%s); only uncompressed .ko files can be used: decompress it", name, need, c)
			}
			return fmt.Errorf("module %s%s is neither built into the kernel nor found in %s", name, need, ms.dir)
		}
		state[name] = visiting
		got, deps, err := modinfo(path)
		if err != nil {
			return err
		}
		if got != "" && moduleName(got) != name {
			return fmt.Errorf("module %s: its .modinfo names it %q", path, got)
		}
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, resolvedModule{name: name, path: path})
		return nil
	}
	for _, m := range want {
		if err := visit(moduleName(m), nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}
