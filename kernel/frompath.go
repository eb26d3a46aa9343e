package kernel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/microagent-dev/microagent/internal/fsutil"
)

// FromPath describes a user's own kernel (--kernel PATH): an ELF vmlinux
// with a PVH entry note, or a bzImage (QEMU boots both; the ELF is faster
// under TCG). modulesDir, if not empty, is a folder (searched recursively) of
// uncompressed .ko files: the GuestModules found there are used, with their
// dependencies; the others are assumed built in. Everything is hashed so the
// caller can record exactly what booted, and Verify re-checks it.
func FromPath(vmlinux string, modulesDir string) (*Kernel, error) {
	abs, err := filepath.Abs(vmlinux)
	if err != nil {
		return nil, fmt.Errorf("kernel %q: %w", vmlinux, err)
	}
	kind, err := kernelKind(abs)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	release := ""
	switch kind {
	case "elf":
		if _, err := pvhEntry(abs); err != nil {
			return nil, fmt.Errorf("kernel: %w", err)
		}
		release = elfRelease(abs)
	case "bzimage":
		release = bzRelease(abs)
	}
	sum, err := fsutil.SHA256File(abs)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", abs, err)
	}
	k := &Kernel{
		Name:          filepath.Base(abs),
		Release:       release,
		Source:        "file:" + abs,
		Vmlinux:       abs,
		VmlinuxSHA256: sum,
		InstalledAt:   time.Now().UTC(),
	}
	if modulesDir == "" {
		return k, nil
	}
	dir, err := filepath.Abs(modulesDir)
	if err != nil {
		return nil, fmt.Errorf("kernel modules %q: %w", modulesDir, err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("kernel modules: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("kernel modules: %s is not a folder", dir)
	}
	ms, err := scanModules(dir)
	if err != nil {
		return nil, err
	}
	var want []string
	for _, m := range GuestModules {
		if _, ok := ms.files[m]; ok {
			want = append(want, m)
		}
	}
	order, err := ms.resolve(want)
	if err != nil {
		return nil, err
	}
	k.Dir = dir
	for _, m := range order {
		if format, _ := moduleFormat(m.path); format != "" {
			// The files are used where they are, and the guest loads plain .ko files.
			return nil, fmt.Errorf("kernel module %s is %s-compressed: decompress the modules in %s, "+
				"or install the kernel's package with \"microagent kernel install --deb FILE\", which does", m.path, format, dir)
		}
		rel, err := filepath.Rel(dir, m.path)
		if err != nil {
			return nil, fmt.Errorf("kernel module %s: %w", m.path, err)
		}
		sum, err := fsutil.SHA256File(m.path)
		if err != nil {
			return nil, fmt.Errorf("kernel module %s: %w", m.path, err)
		}
		k.Modules = append(k.Modules, Module{Name: m.name, File: rel, SHA256: sum})
	}
	return k, nil
}

// elfRelease finds the release in an ELF kernel's banner
// ("Linux version 6.1.0-56-cloud-amd64 (...)"); empty when not found.
func elfRelease(path string) string {
	ef, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer ef.Close()
	sec := ef.Section(".rodata")
	if sec == nil {
		return ""
	}
	data, err := io.ReadAll(io.LimitReader(sec.Open(), 256<<20))
	if err != nil {
		return ""
	}
	const banner = "Linux version "
	i := bytes.Index(data, []byte(banner))
	if i < 0 {
		return ""
	}
	return firstToken(data[i+len(banner):])
}

// bzRelease reads the kernel_version string a bzImage's setup header points
// to (its offset, plus 0x200, is at 0x20e); empty when absent.
func bzRelease(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var ptr [2]byte
	if _, err := f.ReadAt(ptr[:], 0x20e); err != nil {
		return ""
	}
	off := int64(binary.LittleEndian.Uint16(ptr[:]))
	if off == 0 {
		return ""
	}
	buf := make([]byte, 256)
	n, _ := f.ReadAt(buf, off+0x200)
	return firstToken(buf[:n])
}

// firstToken returns the printable text of b up to the first space or NUL.
func firstToken(b []byte) string {
	end := bytes.IndexAny(b, " \x00\n")
	if end < 0 {
		end = len(b)
	}
	s := string(b[:end])
	if len(s) > 128 || strings.ContainsFunc(s, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return ""
	}
	return s
}
