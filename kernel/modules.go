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

// moduleName turns a module file name ("virtio-foo.ko", "virtio-foo.ko.zst")
// into the kernel's module name ("virtio_foo"): the kernel treats '-' and
// '_' alike and reports '_'.
func moduleName(file string) string {
	base := filepath.Base(file)
	if _, ok := moduleFormat(base); ok {
		base = base[:strings.LastIndex(base, ".ko")]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// moduleSet is what a folder of modules offers.
type moduleSet struct {
	dir     string
	files   map[string]string // module name -> path of its .ko (or .ko.zst, .ko.xz, .ko.gz)
	builtin map[string]bool   // names listed in modules.builtin
}

// scanModules indexes every module file under dir and reads
// dir/modules.builtin when present. A plain .ko wins over a compressed copy
// of the same module.
func scanModules(dir string) (*moduleSet, error) {
	ms := &moduleSet{dir: dir, files: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		name := d.Name()
		if name == "modules.builtin" {
			return ms.readBuiltin(p)
		}
		if _, ok := moduleFormat(name); !ok {
			return nil
		}
		m := moduleName(name)
		old, dup := ms.files[m]
		if !dup || strings.HasSuffix(p, ".ko") && !strings.HasSuffix(old, ".ko") {
			ms.files[m] = p // otherwise the first one wins, as the walk is sorted
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
// ELF section (NUL-separated key=value strings, as modpost writes them);
// data is the module's ELF bytes, path names it in errors.
func modinfo(path string, data []byte) (name string, depends []string, err error) {
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return "", nil, fmt.Errorf("module %s: not an ELF object: %w", path, err)
	}
	defer ef.Close()
	sec := ef.Section(".modinfo")
	if sec == nil {
		return "", nil, fmt.Errorf("module %s: no .modinfo section", path)
	}
	info, err := sec.Data()
	if err != nil {
		return "", nil, fmt.Errorf("module %s: read .modinfo: %w", path, err)
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
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

// resolvedModule is one module to load: the path of its file and its ELF
// bytes (decompressed when the file is compressed).
type resolvedModule struct {
	name string
	path string
	data []byte
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
			return fmt.Errorf("module %s%s is neither built into the kernel nor found in %s", name, need, ms.dir)
		}
		state[name] = visiting
		data, err := readModule(path)
		if err != nil {
			return err
		}
		got, deps, err := modinfo(path, data)
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
		order = append(order, resolvedModule{name: name, path: path, data: data})
		return nil
	}
	for _, m := range want {
		if err := visit(moduleName(m), nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}
