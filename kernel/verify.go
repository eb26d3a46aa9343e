package kernel

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// StampFile caches, next to kernel.json, the identity of each file at the
// time it last hashed correctly, so Verify need not re-hash ~55 MB at every
// boot (measured: ~50 ms with a warm page cache on the 2-core build host,
// far more with a cold one).
const StampFile = "verified.json"

// racyMargin is how long a file must have been left untouched before its
// stamp may stand in for its hash. File times come from a coarse clock (one
// tick is up to 10 ms, and some filesystems keep whole seconds), so a write
// in the same tick as the stamp could leave size and times unchanged; a file
// changed within the margin is always re-hashed (git's "racy clean" rule).
var racyMargin = 3 * time.Second

// fullHashes counts full re-hashes, so tests can see the stamp at work.
var fullHashes atomic.Int64

// fileStamp is what identifies an unchanged file: ctime in particular cannot
// be set back by user space, so any write after stamping changes it.
type fileStamp struct {
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns"`
	Ino     uint64 `json:"ino"`
	Dev     uint64 `json:"dev"`
}

type stampRecord struct {
	Files map[string]fileStamp `json:"files"`
}

// statStamp reads path's current identity (without its hash).
func statStamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStamp{}, fmt.Errorf("%s: no stat data", path)
	}
	return fileStamp{
		Size:    fi.Size(),
		MtimeNs: st.Mtim.Nano(),
		CtimeNs: st.Ctim.Nano(),
		Ino:     st.Ino,
		Dev:     uint64(st.Dev), // not uint64 on every platform
	}, nil
}

func (a fileStamp) sameFile(b fileStamp) bool {
	return a.Size == b.Size && a.MtimeNs == b.MtimeNs && a.CtimeNs == b.CtimeNs && a.Ino == b.Ino && a.Dev == b.Dev
}

// hashFile returns the hex SHA-256 of path.
func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Verify checks that the kernel image and every module still have the
// hashes recorded at install time. It runs before every boot, so for an
// installed kernel it trusts a file whose size, times, inode and device match
// the stamp taken when it last hashed correctly, and re-hashes in full
// whenever anything differs.
func (k *Kernel) Verify() error {
	type item struct{ key, path, want string }
	items := []item{{"vmlinux", k.Vmlinux, k.VmlinuxSHA256}}
	for _, m := range k.Modules {
		items = append(items, item{m.File, k.ModulePath(m), m.SHA256})
	}

	var stamps stampRecord
	stampPath := ""
	if k.Dir != "" && k.Source != "" && !isFileSource(k.Source) {
		stampPath = filepath.Join(k.Dir, StampFile)
		if data, err := os.ReadFile(stampPath); err == nil {
			_ = json.Unmarshal(data, &stamps) // a damaged stamp only costs a full hash
		}
	}
	next := stampRecord{Files: map[string]fileStamp{}}
	changed := false
	for _, it := range items {
		cur, err := statStamp(it.path)
		if err != nil {
			return k.verifyErr(it.path, fmt.Sprintf("cannot be read (%v)", err))
		}
		if old, ok := stamps.Files[it.key]; ok && old.SHA256 == it.want && old.sameFile(cur) {
			next.Files[it.key] = old
			continue
		}
		changed = true
		start := time.Now()
		fullHashes.Add(1)
		sum, err := hashFile(it.path)
		if err != nil {
			return k.verifyErr(it.path, fmt.Sprintf("cannot be read (%v)", err))
		}
		if sum != it.want {
			return k.verifyErr(it.path, fmt.Sprintf("has SHA-256 %s, expected %s", sum, it.want))
		}
		after, err := statStamp(it.path)
		if err == nil && after.sameFile(cur) && time.Unix(0, cur.CtimeNs).Before(start.Add(-racyMargin)) {
			cur.SHA256 = sum
			next.Files[it.key] = cur
		}
	}
	if stampPath != "" && changed && len(next.Files) > 0 {
		// Best effort: without a stamp the next boot simply hashes again.
		if data, err := json.Marshal(&next); err == nil {
			_ = writeAtomic(stampPath, data)
		}
	}
	return nil
}

func (k *Kernel) verifyErr(path, what string) error {
	if isFileSource(k.Source) {
		return fmt.Errorf("kernel file %s %s: it changed since it was chosen; pass it again", path, what)
	}
	return fmt.Errorf("kernel %q: %s %s: the install is damaged or was modified: run \"microagent kernel install%s --force\"",
		k.Name, path, what, nameFlag(k.Name))
}

// isFileSource tells a user-supplied kernel (FromPath) from an installed one.
func isFileSource(src string) bool { return strings.HasPrefix(src, "file:") }

// writeAtomic replaces path with data: a temp file in the same folder,
// fsync, rename, so a crash never leaves a partial file.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
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
	ok = true
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, fs.ErrInvalid) {
		return err
	}
	return nil
}
