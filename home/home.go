// Package home locates microagent's state directory and the folders in it.
//
// Everything microagent keeps lives under one directory: MICROAGENT_HOME when
// set, else $XDG_DATA_HOME/microagent, else ~/.local/share/microagent.
// Directories are created 0700 and files 0600.
package home

import (
	"fmt"
	"os"
	"path/filepath"
)

// EnvVar names the environment variable that overrides the state directory.
const EnvVar = "MICROAGENT_HOME"

// Home is a resolved state directory.
type Home struct {
	// Root is the absolute path of the state directory.
	Root string
}

// Resolve returns the state directory: explicit when non-empty, else
// MICROAGENT_HOME, else the XDG data directory.
func Resolve(explicit string) (Home, error) {
	dir := explicit
	if dir == "" {
		dir = os.Getenv(EnvVar)
	}
	if dir == "" {
		base := os.Getenv("XDG_DATA_HOME")
		if base == "" {
			h, err := os.UserHomeDir()
			if err != nil {
				return Home{}, fmt.Errorf("state directory: no %s and no home directory: %w", EnvVar, err)
			}
			base = filepath.Join(h, ".local", "share")
		}
		dir = filepath.Join(base, "microagent")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Home{}, fmt.Errorf("state directory %q: %w", dir, err)
	}
	return Home{Root: abs}, nil
}

// Path joins elem to the state directory.
func (h Home) Path(elem ...string) string {
	return filepath.Join(append([]string{h.Root}, elem...)...)
}

// Ensure creates the state directory (and the named sub-directory) with mode
// 0700 and returns the sub-directory's path.
func (h Home) Ensure(elem ...string) (string, error) {
	p := h.Path(elem...)
	if err := os.MkdirAll(p, 0o700); err != nil {
		return "", fmt.Errorf("state directory: %w", err)
	}
	return p, nil
}

// Sub-directories of the state directory.
const (
	KernelsDir   = "kernels"   // installed guest kernels, one folder each
	ImagesDir    = "images"    // pulled images (OCI layout) and the ref index
	RootfsDir    = "rootfs"    // read-only ext4 root disks, one per image digest
	InitramfsDir = "initramfs" // cached initramfs archives
	RunDir       = "run"       // per-VM runtime folders of one-shot runs
	CacheDir     = "cache"     // small derived facts (disk templates, clock)
)
