package kernel

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/microagent-dev/microagent/internal/fsutil"
)

// StampFile caches, next to kernel.json, the identity of each file at the
// time it last hashed correctly, so Verify need not re-hash ~55 MB at every
// boot (measured: ~50 ms with a warm page cache on the 2-core build host,
// far more with a cold one).
const StampFile = "verified.json"

// stampField is the JSON field of StampFile that holds the stamps, by
// "vmlinux" or module file name.
const stampField = "files"

// racyMargin is how long a file must have been left untouched before its
// stamp may stand in for its hash. File times come from a coarse clock (one
// tick is up to 10 ms, and some filesystems keep whole seconds), so a write
// in the same tick as the stamp could leave size and times unchanged; a file
// changed within the margin is always re-hashed (git's "racy clean" rule).
var racyMargin = 3 * time.Second

// fullHashes counts full re-hashes, so tests can see the stamp at work.
var fullHashes atomic.Int64

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

	stamps := fsutil.Stamps{}
	stampPath := ""
	if k.Dir != "" && k.Source != "" && !isFileSource(k.Source) {
		stampPath = filepath.Join(k.Dir, StampFile)
		stamps = fsutil.LoadStamps(stampPath, stampField) // a damaged stamp only costs a full hash
	}
	next := fsutil.Stamps{}
	changed := false
	for _, it := range items {
		cur, err := fsutil.StatStamp(it.path)
		if err != nil {
			return k.verifyErr(it.path, fmt.Sprintf("cannot be read (%v)", err))
		}
		if sum, ok := stamps.Hash(it.key, cur); ok && sum == it.want {
			cur.SHA256 = sum
			next[it.key] = cur
			continue
		}
		changed = true
		start := time.Now()
		fullHashes.Add(1)
		sum, err := fsutil.SHA256File(it.path)
		if err != nil {
			return k.verifyErr(it.path, fmt.Sprintf("cannot be read (%v)", err))
		}
		if sum != it.want {
			return k.verifyErr(it.path, fmt.Sprintf("has SHA-256 %s, expected %s", sum, it.want))
		}
		next.Record(it.key, it.path, cur, sum, start, racyMargin)
	}
	if stampPath != "" && changed && len(next) > 0 {
		// Best effort: without a stamp the next boot simply hashes again.
		_ = next.Save(stampPath, stampField)
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

// syncDir makes a rename in dir durable. A file system that cannot sync a
// directory (EINVAL) is accepted: the install does not fail for it.
func syncDir(dir string) error {
	if err := fsutil.SyncDir(dir); err != nil && !errors.Is(err, fs.ErrInvalid) {
		return err
	}
	return nil
}
