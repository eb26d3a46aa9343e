// Package kernel installs, records and verifies the guest kernel.
//
// The default guest kernel is Debian's cloud kernel, pinned by package,
// version and .deb SHA-256. Install fetches it with apt-get (or takes a local
// .deb), extracts the uncompressed vmlinux from its bzImage (QEMU boots an ELF
// vmlinux through its PVH entry, skipping the bzImage's decompression, which
// is slow under TCG) and keeps only the few modules the guest needs, in load
// order. Everything lands in <state>/kernels/<name>/ with a kernel.json record;
// Verify re-checks the files against that record before each boot.
package kernel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/microagent-dev/microagent/home"
)

// The pinned default kernel: Debian 12's cloud kernel. Bump all three
// together (the hash is the .deb's SHA256 field in `apt-cache show`).
const (
	DefaultPackage   = "linux-image-6.1.0-56-cloud-amd64"
	DefaultVersion   = "6.1.192-2"
	DefaultDebSHA256 = "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee"
)

// DefaultName is the name the default kernel is installed under.
const DefaultName = "default"

// RecordFile is the name of the install record in a kernel's folder.
const RecordFile = "kernel.json"

// ErrNotInstalled is returned (wrapped) when a named kernel is not installed.
var ErrNotInstalled = errors.New("kernel not installed")

// Module is one loadable kernel module.
type Module struct {
	// Name is the module's name ("virtio_blk").
	Name string `json:"name"`
	// File is the .ko file, relative to the kernel's folder (Kernel.Dir).
	File string `json:"file"`
	// SHA256 is the hex SHA-256 of the file.
	SHA256 string `json:"sha256"`
}

// Kernel is an installed (or user-supplied) guest kernel.
type Kernel struct {
	// Name is the install name (the folder name under kernels/).
	Name string `json:"name"`
	// Package is the Debian package it came from, when it came from one.
	Package string `json:"package,omitempty"`
	// Version is the package version ("6.1.192-2"), or the version found in
	// a user-supplied kernel's banner.
	Version string `json:"version,omitempty"`
	// Release is the kernel release (`uname -r`), when known.
	Release string `json:"release,omitempty"`
	// Source says where it came from: "apt:<pkg>=<version>", "deb:<path>"
	// or "file:<path>".
	Source string `json:"source"`
	// Dir is the kernel's folder; module files are relative to it. It is
	// not stored: Load sets it from where the record was found.
	Dir string `json:"-"`
	// Vmlinux is the absolute path of the kernel image (stored relative to
	// Dir for installed kernels, so the state directory may move).
	Vmlinux string `json:"vmlinux"`
	// VmlinuxSHA256 is the hex SHA-256 of Vmlinux.
	VmlinuxSHA256 string `json:"vmlinux_sha256"`
	// DebSHA256 is the hex SHA-256 of the .deb it was extracted from.
	DebSHA256 string `json:"deb_sha256,omitempty"`
	// Modules are the modules the guest loads, in load order (dependencies
	// first). Modules built into the kernel are not listed.
	Modules []Module `json:"modules"`
	// InstalledAt is when it was installed (or hashed, for FromPath).
	InstalledAt time.Time `json:"installed_at"`
}

// ModulePath returns the absolute path of m's file.
func (k *Kernel) ModulePath(m Module) string {
	if filepath.IsAbs(m.File) {
		return m.File
	}
	return filepath.Join(k.Dir, m.File)
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// checkName rejects names that are not a single safe path component.
func checkName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("kernel name %q: use 1-64 letters, digits, '.', '_' or '-', not starting with '.', '_' or '-'", name)
	}
	return nil
}

// Load reads the installed kernel called name.
func Load(h home.Home, name string) (*Kernel, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	dir := h.Path(home.KernelsDir, name)
	data, err := os.ReadFile(filepath.Join(dir, RecordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("kernel %q is not installed (no %s): run \"microagent kernel install%s\": %w",
			name, filepath.Join(dir, RecordFile), nameFlag(name), ErrNotInstalled)
	}
	if err != nil {
		return nil, fmt.Errorf("kernel %q: %w", name, err)
	}
	var k Kernel
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("kernel %q: %s is damaged (%v): run \"microagent kernel install%s --force\"",
			name, filepath.Join(dir, RecordFile), err, nameFlag(name))
	}
	if k.Vmlinux == "" || k.VmlinuxSHA256 == "" {
		return nil, fmt.Errorf("kernel %q: %s names no vmlinux or hash: run \"microagent kernel install%s --force\"",
			name, filepath.Join(dir, RecordFile), nameFlag(name))
	}
	for _, m := range k.Modules {
		if m.Name == "" || m.SHA256 == "" || !filepath.IsLocal(m.File) {
			return nil, fmt.Errorf("kernel %q: %s has a bad module entry %+v: run \"microagent kernel install%s --force\"",
				name, filepath.Join(dir, RecordFile), m, nameFlag(name))
		}
	}
	k.Dir = dir
	k.Name = name
	if !filepath.IsAbs(k.Vmlinux) {
		k.Vmlinux = filepath.Join(dir, k.Vmlinux)
	}
	return &k, nil
}

// nameFlag is the --name argument to repeat in a hint, empty for the default.
func nameFlag(name string) string {
	if name == DefaultName {
		return ""
	}
	return " --name " + name
}

// List returns the installed kernels, sorted by name. A damaged entry does
// not hide the others: they are returned together with an error naming it.
func List(h home.Home) ([]*Kernel, error) {
	entries, err := os.ReadDir(h.Path(home.KernelsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	var ks []*Kernel
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || checkName(e.Name()) != nil { // skips temp and lock files
			continue
		}
		k, err := Load(h, e.Name())
		if errors.Is(err, ErrNotInstalled) {
			continue // a folder without a record is not ours
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].Name < ks[j].Name })
	return ks, errors.Join(errs...)
}

// Default returns the installed default kernel; the error wraps
// ErrNotInstalled when there is none.
func Default(h home.Home) (*Kernel, error) {
	return Load(h, DefaultName)
}

// EnsureDefault returns the default kernel, installing it first when it is
// missing (first use). Progress goes to stderr (nil to discard). It does not
// Verify: callers do that before each boot.
func EnsureDefault(ctx context.Context, h home.Home, stderr io.Writer) (*Kernel, error) {
	k, err := Default(h)
	if err == nil || !errors.Is(err, ErrNotInstalled) {
		return k, err
	}
	return Install(ctx, h, InstallOptions{Name: DefaultName, Stderr: stderr})
}

// save writes the record into dir (0600), with paths relative to dir.
func (k *Kernel) save(dir string) error {
	rec := *k
	if rel, err := filepath.Rel(dir, rec.Vmlinux); err == nil && filepath.IsLocal(rel) {
		rec.Vmlinux = rel
	}
	data, err := json.MarshalIndent(&rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode kernel record: %w", err)
	}
	return writeFileSync(filepath.Join(dir, RecordFile), append(data, '\n'))
}

// writeFileSync writes a new file with mode 0600 and syncs it.
func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// String describes the kernel in one line.
func (k *Kernel) String() string {
	var b strings.Builder
	b.WriteString(k.Name)
	if k.Release != "" {
		fmt.Fprintf(&b, " %s", k.Release)
	}
	if k.Version != "" {
		fmt.Fprintf(&b, " (%s)", k.Version)
	}
	fmt.Fprintf(&b, " from %s", k.Source)
	return b.String()
}
