// Package tarcopy moves file trees as tar streams, the way `docker cp` does:
// Write archives a path (a file, a directory tree, a symlink) and Extract
// unpacks such an archive at a destination, deciding from what is already
// there whether to copy into a directory, replace a file or create a new
// one. Both the host (microagent cp) and the guest agent use it, so the two
// directions behave the same.
//
// Archives keep modes (with setuid, setgid and sticky bits), numeric
// ownership, modification times (to the nanosecond: PAX headers), symlinks
// (as links, never followed), hard links within the tree, empty
// directories and FIFOs. Extraction never follows a symlink inside the
// destination tree and refuses entries that would leave it ("..",
// absolute names, a path through a symlink), so neither side can be made
// to write outside the destination, and sets each entry's owner, mode and
// times through its own descriptor, so a process writing in the
// destination meanwhile cannot redirect them. An untrusted archive (see
// ExtractOptions.Untrusted) is further kept from planting setuid files,
// device nodes, other owners or other names than the one asked for.
package tarcopy

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// WriteOptions adjust an archive's top-level entry.
type WriteOptions struct {
	// Mode, when not zero, replaces the permission bits (and setuid,
	// setgid, sticky) of the top-level entry.
	Mode fs.FileMode
	// SetMode says Mode is to be used even when zero (mode 0000).
	SetMode bool
}

// Stats count what was written or extracted.
type Stats struct {
	Files    int   `json:"files"`
	Dirs     int   `json:"dirs"`
	Symlinks int   `json:"symlinks"`
	Other    int   `json:"other,omitempty"`
	Bytes    int64 `json:"bytes"`
	// Skipped counts the device nodes and FIFOs an untrusted extraction
	// did not create (see ExtractOptions.Untrusted).
	Skipped int `json:"skipped,omitempty"`
}

func (s *Stats) count(h *tar.Header) {
	switch h.Typeflag {
	case tar.TypeReg:
		s.Files++
		s.Bytes += h.Size
	case tar.TypeDir:
		s.Dirs++
	case tar.TypeSymlink:
		s.Symlinks++
	case tar.TypeLink:
		s.Files++
	default:
		s.Other++
	}
}

// SourceName splits a source path the way `docker cp` reads it: a path
// ending in "/." means the directory's contents (the archive's top entry is
// then named "."); otherwise the top entry is named after the path's last
// element.
func SourceName(p string) (clean, top string) {
	if p == "." || strings.HasSuffix(p, "/.") {
		return filepath.Clean(p), "."
	}
	clean = filepath.Clean(p)
	top = filepath.Base(clean)
	if top == "/" {
		top = "." // the root directory: its contents
	}
	return clean, top
}

// Write archives the file, directory tree or symlink at src onto w; see
// SourceName for how the top entry is named. A symlink at src is archived
// as a link. Sockets are skipped. The stream is a complete tar archive.
// An error names the file that failed.
func Write(w io.Writer, src string, o WriteOptions) (Stats, error) {
	var st Stats
	root, top := SourceName(src)
	fi, err := os.Lstat(root)
	if err != nil {
		return st, fmt.Errorf("copy source %s: %w", src, unwrapPath(err))
	}
	if top == "." && !fi.IsDir() {
		return st, fmt.Errorf("copy source %s: not a directory", src)
	}
	// Small entries would otherwise reach w as many tiny writes (a header
	// here, 4 KiB there): over the guest channel each is a frame.
	bw := bufio.NewWriterSize(w, 128<<10)
	tw := tar.NewWriter(bw)
	links := map[fileID]string{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("copy source %s: %w", p, unwrapPath(err))
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		name := top
		if rel != "." {
			name = path.Join(top, filepath.ToSlash(rel))
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("copy source %s: %w", p, unwrapPath(err))
		}
		if info.Mode()&fs.ModeSocket != 0 {
			return nil
		}
		h, err := header(p, name, info, links)
		if err != nil {
			return err
		}
		if p == root && (o.Mode != 0 || o.SetMode) {
			h.Mode = int64(unixMode(o.Mode))
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("copy source %s: %w", p, err)
		}
		st.count(h)
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			if err := copyFile(tw, p, h.Size); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	if err := tw.Close(); err != nil {
		return st, fmt.Errorf("copy source %s: %w", src, err)
	}
	if err := bw.Flush(); err != nil {
		return st, fmt.Errorf("copy source %s: %w", src, err)
	}
	return st, nil
}

var time0 time.Time

type fileID struct{ dev, ino uint64 }

// header builds the tar header of one file: numeric ownership only (names
// differ between host and guest), PAX for exact times.
func header(p, name string, info fs.FileInfo, links map[fileID]string) (*tar.Header, error) {
	target := ""
	if info.Mode()&fs.ModeSymlink != 0 {
		t, err := os.Readlink(p)
		if err != nil {
			return nil, fmt.Errorf("copy source %s: %w", p, unwrapPath(err))
		}
		target = t
	}
	h, err := tar.FileInfoHeader(info, target)
	if err != nil {
		return nil, fmt.Errorf("copy source %s: %w", p, err)
	}
	h.Name = name
	if info.IsDir() && !strings.HasSuffix(h.Name, "/") {
		h.Name += "/"
	}
	h.Uname, h.Gname = "", ""
	h.AccessTime, h.ChangeTime = time0, time0
	h.Format = tar.FormatPAX
	if sys, ok := info.Sys().(*syscall.Stat_t); ok {
		h.Uid, h.Gid = int(sys.Uid), int(sys.Gid)
		h.Mode = int64(sys.Mode & 0o7777)
		if info.Mode().IsRegular() && sys.Nlink > 1 {
			id := fileID{uint64(sys.Dev), sys.Ino}
			if first, ok := links[id]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				links[id] = name
			}
		}
	}
	return h, nil
}

// copyFile writes exactly size bytes of the file at p.
func copyFile(w io.Writer, p string, size int64) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("copy source %s: %w", p, unwrapPath(err))
	}
	defer f.Close()
	n, err := io.CopyN(w, f, size)
	if err == io.EOF {
		return fmt.Errorf("copy source %s: the file shrank while it was copied (%d of %d bytes)", p, n, size)
	}
	if err != nil {
		return fmt.Errorf("copy source %s: %w", p, unwrapPath(err))
	}
	return nil
}

// unixMode turns an fs.FileMode's permission and special bits into the
// st_mode bits tar stores.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= syscall.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		u |= syscall.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		u |= syscall.S_ISVTX
	}
	return u
}

// ParseMode reads an octal mode such as "600" or "0755" (at most 07777).
func ParseMode(s string) (fs.FileMode, error) {
	var v uint32
	if s == "" || len(s) > 5 {
		return 0, fmt.Errorf("mode %q: give an octal mode such as 0644", s)
	}
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, fmt.Errorf("mode %q: give an octal mode such as 0644", s)
		}
		v = v*8 + uint32(c-'0')
	}
	if v > 0o7777 {
		return 0, fmt.Errorf("mode %q: at most 07777", s)
	}
	m := fs.FileMode(v & 0o777)
	if v&syscall.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if v&syscall.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if v&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m, nil
}

// unwrapPath drops the *PathError wrapping, whose path the caller names
// already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
