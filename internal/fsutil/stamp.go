package fsutil

import (
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Stamp is a regular file's identity (size, times, inode, device) together
// with the SHA-256 it had when it was stamped. ctime in particular cannot be
// set back from user space, so any write after stamping changes the stamp.
type Stamp struct {
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns"`
	Ino     uint64 `json:"ino"`
	Dev     uint64 `json:"dev"`
}

// StatStamp returns path's current identity, without a hash. It fails for
// anything but a regular file (symbolic links are followed): only a regular
// file's content is pinned by its identity.
func StatStamp(path string) (Stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Stamp{}, err
	}
	if !fi.Mode().IsRegular() {
		return Stamp{}, fmt.Errorf("%s is not a regular file", path)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Stamp{}, fmt.Errorf("%s: no stat data", path)
	}
	return Stamp{
		Size:    fi.Size(),
		MtimeNs: st.Mtim.Nano(),
		CtimeNs: st.Ctim.Nano(),
		Ino:     st.Ino,
		Dev:     uint64(st.Dev), // not uint64 on every platform
	}, nil
}

// SameFile reports whether a and b have the same identity (their hashes are
// not compared).
func (a Stamp) SameFile(b Stamp) bool {
	return a.Size == b.Size && a.MtimeNs == b.MtimeNs && a.CtimeNs == b.CtimeNs && a.Ino == b.Ino && a.Dev == b.Dev
}

// Stamps remembers, per key (a file's name or path, as the caller chooses),
// the stamp a file had when it last hashed correctly, so that a file whose
// identity has not changed since need not be hashed again.
type Stamps map[string]Stamp

// LoadStamps reads a stamp file written by Save under the same field. A
// missing or damaged file gives an empty (non-nil) Stamps: it only costs
// hashing again.
func LoadStamps(path, field string) Stamps {
	var doc map[string]Stamps
	if data, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(data, &doc)
	}
	if s := doc[field]; s != nil {
		return s
	}
	return Stamps{}
}

// Save writes s to path atomically (mode 0600) as a JSON object whose one
// field, named field, holds the stamps by key.
func (s Stamps) Save(path, field string) error {
	data, err := json.Marshal(map[string]Stamps{field: s})
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, data, 0o600)
}

// Hash returns the SHA-256 recorded for key if cur, the file's identity now,
// is still the recorded one.
func (s Stamps) Hash(key string, cur Stamp) (string, bool) {
	old, ok := s[key]
	if !ok || !old.SameFile(cur) {
		return "", false
	}
	return old.SHA256, true
}

// Record remembers sum as the hash of the file at path under key. before is
// the file's identity taken before hashing began, at hashStart. The stamp is
// only kept when path still has that identity now and was last changed more
// than margin before hashStart: file times come from a coarse clock, so a
// write in the same tick as the stamp could leave them unchanged (git's
// "racy clean" rule). It reports whether the entry for key changed.
func (s Stamps) Record(key, path string, before Stamp, sum string, hashStart time.Time, margin time.Duration) bool {
	after, err := StatStamp(path)
	if err != nil || !after.SameFile(before) || !time.Unix(0, before.CtimeNs).Before(hashStart.Add(-margin)) {
		return false
	}
	before.SHA256 = sum
	if old, ok := s[key]; ok && old == before {
		return false
	}
	s[key] = before
	return true
}
