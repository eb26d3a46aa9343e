// Package fsutil holds the small file-system helpers the state-directory
// packages (kernel, initramfs, image, rootfs) share: atomic file writes,
// directory syncs, the stat-stamp cache that spares re-hashing unchanged
// files, and a reader that stops when its context ends.
package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// TempPrefix starts the name of every temporary file WriteAtomic creates.
// The full name is TempPrefix + the target's base name + "-" + a random
// suffix, in the target's directory, so a cleaner can tell what an
// interrupted write left behind, and for which target.
const TempPrefix = ".tmp-"

// WriteAtomic creates or replaces path with what fill writes into f, a new
// temporary file in path's directory whose mode is set to perm exactly (the
// umask does not apply). After fill the file is fsynced, closed and renamed
// over path, and the directory is fsynced, so a crash or a full disk leaves
// the old file or the complete new one under path, never a partial one.
//
// If fill or any step up to the rename fails, the temporary file is removed
// and the error is returned unwrapped (fill's own error included). If only
// the final directory sync fails, the new file is already in place and the
// error is a *DirSyncError.
func WriteAtomic(path string, perm fs.FileMode, fill func(f *os.File) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, TempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	renamed := false
	defer func() {
		if !renamed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := fill(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	renamed = true
	if err := SyncDir(dir); err != nil {
		return &DirSyncError{Dir: dir, Err: err}
	}
	return nil
}

// WriteFileAtomic creates or replaces path with data, as WriteAtomic does.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	return WriteAtomic(path, perm, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// SyncDir fsyncs the directory dir, which makes a rename into it, or a file
// created in it, survive a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// DirSyncError reports that WriteAtomic put the new file in place but could
// not sync its directory, so after a crash the old file may be back. Callers
// for which that only costs a rebuild may ignore it. Its message is the
// underlying error's, which names the directory.
type DirSyncError struct {
	Dir string
	Err error
}

// Error returns the message of the underlying error.
func (e *DirSyncError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error, for errors.Is and errors.As.
func (e *DirSyncError) Unwrap() error { return e.Err }

// RenameNoReplace renames a folder into place, failing with EEXIST when the
// target exists (even as an empty folder, which rename(2) would replace).
func RenameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// A file system without RENAME_NOREPLACE: check, then rename (racy
		// only against a concurrent create of the same name).
		if _, serr := os.Lstat(to); serr == nil {
			return unix.EEXIST
		}
		return os.Rename(from, to)
	}
	return err
}
