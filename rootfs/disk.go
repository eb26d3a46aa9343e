package rootfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/fsutil"
)

// MinWritableDisk is the smallest writable disk NewWritableDisk makes
// (ext4 with a journal needs a few MiB of metadata).
const MinWritableDisk = 16 << 20

// templateVersion names the mkfs options in the template's file name, so
// changing them never reuses an old template.
const templateVersion = "v1"

// mkfsArgs formats a writable disk. The journal stays (workspaces outlive
// crashes); no blocks are reserved for root (the whole disk is the guest's
// upper layer); the root directory is root's whatever user runs mkfs.
// lazy_itable_init=0 makes mke2fs flag the inode tables as zeroed (on a
// sparse file it punches holes instead of writing), so the guest kernel
// never starts its lazy-init thread.
var mkfsArgs = []string{"-q", "-F", "-t", "ext4", "-m", "0", "-L", "microagent-rw",
	"-E", "lazy_itable_init=0,lazy_journal_init=1,root_owner=0:0"}

// NewWritableDisk creates path as a sparse raw disk of sizeBytes holding an
// empty ext4 file system (for the guest's overlay upper layer). An existing
// path is an error, never overwritten. One formatted template per size is
// kept in <state>/cache and sparse-copied, which takes milliseconds.
func NewWritableDisk(ctx context.Context, h home.Home, path string, sizeBytes int64) error {
	if sizeBytes < MinWritableDisk {
		return fmt.Errorf("writable disk %s: size %d bytes is below the minimum of %d MiB", path, sizeBytes, MinWritableDisk>>20)
	}
	sizeBytes = (sizeBytes + 4095) &^ 4095
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("writable disk %s already exists; remove it first to start from an empty disk", path)
	}
	tmpl, err := ensureTemplate(ctx, h, sizeBytes)
	if err != nil {
		return fmt.Errorf("writable disk %s: %w", path, err)
	}
	if err := fsutil.CopySparseFile(ctx, tmpl, path, sizeBytes, nil); err != nil {
		return fmt.Errorf("writable disk %s: %w", path, err)
	}
	return nil
}

// ensureTemplate returns the cached formatted template for size, making it
// when missing.
func ensureTemplate(ctx context.Context, h home.Home, size int64) (string, error) {
	dir, err := h.Ensure(home.CacheDir)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, fmt.Sprintf("ext4-rw-%s-%d.img", templateVersion, size))
	if fi, err := os.Stat(p); err == nil && fi.Size() == size {
		return p, nil
	}
	unlock, err := lock(ctx, p+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if fi, err := os.Stat(p); err == nil && fi.Size() == size {
		return p, nil
	}
	mkfs, err := findTool("mkfs.ext4")
	if err != nil {
		return "", err
	}
	err = fsutil.WriteAtomic(p, 0o600, func(f *os.File) error {
		if err := f.Truncate(size); err != nil {
			return err
		}
		// mkfs writes through its own descriptor; WriteAtomic's fsync of
		// f then flushes the file all the same.
		cmd := exec.CommandContext(ctx, mkfs, append(append([]string{}, mkfsArgs...), f.Name())...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", mkfs, err, strings.TrimSpace(string(out)))
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return p, nil
}

// Grow enlarges the ext4 file system in the disk image at path to
// sizeBytes: it extends the file and runs e2fsck and resize2fs on it. The
// disk must not be in use by a running guest. Shrinking is refused.
func Grow(ctx context.Context, path string, sizeBytes int64) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("grow disk: %w", err)
	}
	sizeBytes = (sizeBytes + 4095) &^ 4095
	if sizeBytes < fi.Size() {
		return fmt.Errorf("grow disk %s: %d bytes is smaller than its current %d; shrinking is not supported", path, sizeBytes, fi.Size())
	}
	if sizeBytes == fi.Size() {
		return nil
	}
	e2fsck, err := findTool("e2fsck")
	if err != nil {
		return err
	}
	resize2fs, err := findTool("resize2fs")
	if err != nil {
		return err
	}
	// resize2fs insists on a freshly checked file system; -p repairs only
	// what is safe to repair unattended.
	if out, err := exec.CommandContext(ctx, e2fsck, "-f", "-p", path).CombinedOutput(); err != nil {
		var ee *exec.ExitError
		// Exit status 1 means errors were corrected.
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			return fmt.Errorf("grow disk %s: e2fsck: %v: %s", path, err, strings.TrimSpace(string(out)))
		}
	}
	if err := os.Truncate(path, sizeBytes); err != nil {
		return fmt.Errorf("grow disk %s: %w", path, err)
	}
	if out, err := exec.CommandContext(ctx, resize2fs, path).CombinedOutput(); err != nil {
		return fmt.Errorf("grow disk %s: resize2fs: %v: %s", path, err, strings.TrimSpace(string(out)))
	}
	return syncFile(path)
}

// findTool locates an e2fsprogs tool, also in the sbin folders a non-root
// PATH lacks.
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: install e2fsprogs (apt-get install e2fsprogs)", name)
}

func syncFile(p string) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
