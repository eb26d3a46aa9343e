package tarcopy

import (
	"archive/tar"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Owner is a numeric owner.
type Owner struct {
	UID int `json:"uid"`
	GID int `json:"gid"`
}

// ExtractOptions adjust extraction.
type ExtractOptions struct {
	// Owner, when set, owns every extracted entry instead of the
	// archive's uid/gid. Without it the archive's numeric ownership is
	// kept when the extracting process is root (for an Untrusted archive,
	// only with KeepOwner); otherwise entries belong to the extracting
	// user (only root may give files away).
	Owner *Owner
	// MkdirParents creates the destination's missing parent directories
	// (mode 0755, owned by the extracting user) instead of failing.
	MkdirParents bool
	// Untrusted extracts an archive whose sender must gain nothing on
	// this side: the host extracting what a guest sent, whose agent a
	// hostile workload may control. Then setuid, setgid and sticky bits
	// are dropped; device nodes and FIFOs are skipped (counted in
	// Stats.Skipped), never created: a copy out of a workspace carries
	// files, and a tree holding a FIFO is still worth copying; entries
	// belong to the extracting user unless KeepOwner; and the destination
	// itself (and, for a new one, its parent) is refused when it is a
	// symlink, which an earlier copy could have planted.
	Untrusted bool
	// KeepOwner, with Untrusted, keeps the archive's numeric owners when
	// the extracting process is root (`microagent cp -a`).
	KeepOwner bool
	// Top, when not empty, is the name the archive was asked for (see
	// SourceName): Extract refuses an archive whose first entry has
	// another name before writing anything, and any later entry not at
	// or below it. Without it the sender chooses the name that lands in
	// a directory destination.
	Top string
}

// ErrDestination wraps the errors about a destination that cannot take
// the archive (missing parent, a directory onto a file, ...); nothing has
// been written when it is returned.
var ErrDestination = errors.New("bad copy destination")

func destErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrDestination, fmt.Sprintf(format, args...))
}

// Extract unpacks an archive made by Write at dst, as `docker cp` does:
//
//   - dst is an existing directory: the archive's top entry is put inside
//     it under its own name (a top entry "." - a source ending in "/." -
//     puts the source directory's contents into dst);
//   - dst is an existing file: a file replaces it; a directory is refused;
//   - dst does not exist: it is created as a copy of the top entry (its
//     parent must exist unless MkdirParents; a dst ending in "/" must be
//     an existing directory when the source is a file).
//
// Symlinks in dst itself are followed, unless Untrusted; inside the tree
// being written none is (an entry whose path crosses a symlink is
// refused). Regular files are written under a temporary name and renamed
// into place, so none is left half-written. A destination problem (ErrDestination) is found before
// anything is written.
func Extract(r io.Reader, dst string, o ExtractOptions) (Stats, error) {
	tr := tar.NewReader(r)
	first, err := nextHeader(tr)
	if err == io.EOF {
		return Stats{}, errors.New("copy: the archive is empty")
	}
	if err != nil {
		return Stats{}, err
	}
	top := path.Clean(first.Name)
	if top == "/" || strings.Contains(top, "/") || top == ".." {
		return Stats{}, fmt.Errorf("copy: the archive's first entry %q is not a single top-level name", first.Name)
	}
	if o.Top != "" && top != o.Top {
		return Stats{}, fmt.Errorf("copy: the archive's first entry %q is not the requested %q: refused, nothing written (the sender does not choose the name that lands here)", first.Name, o.Top)
	}
	isDir := first.Typeflag == tar.TypeDir
	if top == "." && !isDir {
		return Stats{}, errors.New("copy: the archive's top entry \".\" is not a directory")
	}
	into, rootName, err := resolveDest(dst, top, isDir, o)
	if err != nil {
		return Stats{}, err
	}
	mapName := func(n string) (string, error) {
		c, err := cleanName(n)
		if err != nil {
			return "", err
		}
		rest := c
		if top != "." {
			if c != top && !strings.HasPrefix(c, top+"/") {
				return "", fmt.Errorf("copy: archive entry %q is outside the top entry %q: refused", n, top)
			}
			rest = strings.TrimPrefix(strings.TrimPrefix(c, top), "/")
		}
		if rest == "." {
			rest = ""
		}
		return path.Join(rootName, rest), nil
	}
	return extract(tr, first, into, mapName, o)
}

// ExtractInto unpacks any archive into the existing directory dir, each
// entry at its own name (as `tar -x -C dir` would), with the same
// guarantees as Extract.
func ExtractInto(r io.Reader, dir string, o ExtractOptions) (Stats, error) {
	fi, err := o.stat(filepath.Clean(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return Stats{}, destErr("%s: %v", dir, unwrapPath(err))
	}
	if err != nil {
		return Stats{}, err
	}
	if !fi.IsDir() {
		return Stats{}, destErr("%s is not a directory (a tar stream is extracted into a directory)", dir)
	}
	tr := tar.NewReader(r)
	first, err := nextHeader(tr)
	if err == io.EOF {
		return Stats{}, nil
	}
	if err != nil {
		return Stats{}, err
	}
	return extract(tr, first, filepath.Clean(dir), func(n string) (string, error) {
		c, err := cleanName(n)
		if c == "." {
			c = ""
		}
		return c, err
	}, o)
}

// resolveDest decides where the top entry goes: into the directory into,
// under rootName ("" meaning onto into itself).
func resolveDest(dst, top string, isDir bool, o ExtractOptions) (into, rootName string, err error) {
	slash := strings.HasSuffix(dst, "/") || strings.HasSuffix(dst, "/.")
	clean := filepath.Clean(dst)
	fi, err := o.stat(clean)
	switch {
	case err == nil && fi.IsDir():
		if top == "." {
			return clean, "", nil
		}
		return clean, top, nil
	case err == nil:
		if isDir {
			return "", "", destErr("cannot copy a directory onto the file %s", clean)
		}
		if slash {
			return "", "", destErr("%s is not a directory", clean)
		}
		return filepath.Dir(clean), filepath.Base(clean), nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", "", err
	}
	if !isDir && slash {
		return "", "", destErr("the directory %s does not exist", clean)
	}
	parent := filepath.Dir(clean)
	pfi, err := o.stat(parent)
	switch {
	case err == nil && !pfi.IsDir():
		return "", "", destErr("%s is not a directory", parent)
	case errors.Is(err, fs.ErrNotExist) && o.MkdirParents:
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return "", "", destErr("create %s: %v", parent, unwrapPath(err))
		}
	case errors.Is(err, fs.ErrNotExist):
		return "", "", destErr("the parent directory %s does not exist", parent)
	case err != nil:
		return "", "", err
	}
	return parent, filepath.Base(clean), nil
}

// stat looks at a destination path: following a symlink there, or, for
// an untrusted archive, refusing it, since an earlier copy from the same
// sender may have made it to redirect this one. A missing path is
// returned as fs.ErrNotExist; any other failure is an ErrDestination.
func (o ExtractOptions) stat(p string) (fs.FileInfo, error) {
	var fi fs.FileInfo
	var err error
	if o.Untrusted {
		fi, err = os.Lstat(p)
	} else {
		fi, err = os.Stat(p)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, err
	case err != nil:
		return nil, destErr("%s: %v", p, unwrapPath(err))
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, destErr("%s is a symlink: refused (a copy from a workspace never follows a symlink at its destination, as an earlier copy may have planted it; give the path it points to)", p)
	}
	return fi, nil
}

// cleanName validates an entry name: relative, never above the top.
func cleanName(n string) (string, error) {
	if n == "" {
		return "", errors.New("copy: archive entry with an empty name")
	}
	if strings.HasPrefix(n, "/") {
		return "", fmt.Errorf("copy: archive entry %q has an absolute name: refused", n)
	}
	c := path.Clean(n)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("copy: archive entry %q leads outside the destination: refused", n)
	}
	return c, nil
}

func nextHeader(tr *tar.Reader) (*tar.Header, error) {
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, err
		}
		if err != nil {
			return nil, fmt.Errorf("copy: read the archive: %w", err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		return h, nil
	}
}

// extractor writes entries beneath one directory file descriptor.
type extractor struct {
	root    int
	into    string
	o       ExtractOptions
	chown   bool
	st      Stats
	dirs    []dirMeta
	written map[string]bool // regular files from this archive, for hard links
	buf     []byte
	// parents caches open parent directories (entries come grouped by
	// directory); fresh are the directories this extraction created, whose
	// entries need no check for an existing file. Both save system calls,
	// which are dear in an emulated guest.
	parents map[string]int
	fresh   map[string]bool
}

// maxParents bounds the cached directory descriptors.
const maxParents = 64

func (x *extractor) closeParents() {
	for _, fd := range x.parents {
		unix.Close(fd)
	}
	clear(x.parents)
}

type dirMeta struct {
	rel string
	h   *tar.Header
}

func extract(tr *tar.Reader, first *tar.Header, into string, mapName func(string) (string, error), o ExtractOptions) (Stats, error) {
	flags := unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC
	if o.Untrusted {
		flags |= unix.O_NOFOLLOW // resolveDest refused a symlink there
	}
	root, err := unix.Open(into, flags, 0)
	if err != nil {
		return Stats{}, destErr("%s: %v", into, err)
	}
	defer unix.Close(root)
	chown := o.Owner != nil || os.Geteuid() == 0 && (!o.Untrusted || o.KeepOwner)
	x := &extractor{root: root, into: into, o: o, chown: chown,
		written: map[string]bool{}, buf: make([]byte, 256<<10), parents: map[string]int{}, fresh: map[string]bool{}}
	defer x.closeParents()
	h := first
	for {
		rel, err := mapName(h.Name)
		if err != nil {
			return x.st, err
		}
		if err := x.entry(tr, h, rel, mapName); err != nil {
			return x.st, err
		}
		if h, err = nextHeader(tr); err == io.EOF {
			break
		} else if err != nil {
			return x.st, err
		}
	}
	// Directories last, deepest first: adding their entries changed their
	// times, and a read-only mode would have blocked the writes.
	for i := len(x.dirs) - 1; i >= 0; i-- {
		d := x.dirs[i]
		if err := x.meta(d.rel, d.h); err != nil {
			return x.st, err
		}
	}
	return x.st, nil
}

// display names a path for errors.
func (x *extractor) display(rel string) string { return filepath.Join(x.into, rel) }

// parentDir is the parent of an entry's relative path ("." at the top).
func parentDir(rel string) string {
	dir := strings.TrimSuffix(path.Dir(rel), "/")
	if dir == "" {
		return "."
	}
	return dir
}

// parent opens rel's parent directory beneath the root without following
// any symlink, and returns it with rel's last element. The descriptor is
// cached: callers do not close it.
func (x *extractor) parent(rel string) (int, string, error) {
	dir, base := parentDir(rel), path.Base(rel)
	if fd, ok := x.parents[dir]; ok {
		return fd, base, nil
	}
	if len(x.parents) >= maxParents {
		x.closeParents()
	}
	fd, err := unix.Openat2(x.root, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
			return -1, "", fmt.Errorf("copy: %s: the path goes through a symlink: refused (symlinks inside the destination are never followed)", x.display(rel))
		}
		return -1, "", fmt.Errorf("copy: %s: parent directory: %w", x.display(rel), err)
	}
	x.parents[dir] = fd
	return fd, base, nil
}

func (x *extractor) entry(tr *tar.Reader, h *tar.Header, rel string, mapName func(string) (string, error)) error {
	if rel == "" {
		// The top entry maps onto the existing destination directory,
		// which keeps its own mode, owner and times.
		if h.Typeflag != tar.TypeDir {
			return destErr("%s is a directory", x.into)
		}
		x.st.count(h)
		return nil
	}
	pfd, base, err := x.parent(rel)
	if err != nil {
		return err
	}
	// In a directory this extraction made, nothing can be in the way
	// unless the archive names an entry twice: creating then fails with
	// EEXIST and the entry is done again the careful way.
	if x.fresh[parentDir(rel)] {
		err := x.entryAt(tr, h, pfd, base, rel, mapName, true)
		if !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	return x.entryAt(tr, h, pfd, base, rel, mapName, false)
}

// entryAt creates one entry as base in pfd; assumeNew skips the checks for
// something already there.
func (x *extractor) entryAt(tr *tar.Reader, h *tar.Header, pfd int, base, rel string, mapName func(string) (string, error), assumeNew bool) error {
	var cur unix.Stat_t
	exists := !assumeNew && unix.Fstatat(pfd, base, &cur, unix.AT_SYMLINK_NOFOLLOW) == nil
	curDir := exists && cur.Mode&unix.S_IFMT == unix.S_IFDIR
	if curDir && h.Typeflag != tar.TypeDir {
		return fmt.Errorf("copy: %s: cannot replace a directory with a non-directory", x.display(rel))
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if exists && !curDir {
			return fmt.Errorf("copy: %s: cannot replace a non-directory with a directory", x.display(rel))
		}
		if !exists {
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return fmt.Errorf("copy: %s: %w", x.display(rel), err)
			}
			x.fresh[rel] = true
		}
		x.dirs = append(x.dirs, dirMeta{rel, h})
	case tar.TypeReg:
		if err := x.file(tr, h, pfd, base, rel, assumeNew); err != nil {
			return err
		}
		x.written[rel] = true
	case tar.TypeSymlink:
		if exists {
			if err := unix.Unlinkat(pfd, base, 0); err != nil {
				return fmt.Errorf("copy: %s: replace: %w", x.display(rel), err)
			}
		}
		if err := unix.Symlinkat(h.Linkname, pfd, base); err != nil {
			return fmt.Errorf("copy: %s: %w", x.display(rel), err)
		}
		if err := x.metaAt(pfd, base, rel, h); err != nil {
			return err
		}
	case tar.TypeLink:
		target, err := mapName(h.Linkname)
		if err != nil {
			return err
		}
		if !x.written[target] {
			return fmt.Errorf("copy: archive entry %q links to %q, which is not a file earlier in the archive: refused", h.Name, h.Linkname)
		}
		tfd, tbase, err := x.parent(target)
		if err != nil {
			return err
		}
		if exists {
			if err := unix.Unlinkat(pfd, base, 0); err != nil {
				return fmt.Errorf("copy: %s: replace: %w", x.display(rel), err)
			}
		}
		if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
			return fmt.Errorf("copy: %s: link to %s: %w", x.display(rel), x.display(target), err)
		}
		x.written[rel] = true
	case tar.TypeFifo, tar.TypeChar, tar.TypeBlock:
		if x.o.Untrusted {
			// Skipped, not refused: a tree with a FIFO in it is still
			// worth copying, and `docker cp` users expect the files.
			x.st.Skipped++
			return nil
		}
		if exists {
			if err := unix.Unlinkat(pfd, base, 0); err != nil {
				return fmt.Errorf("copy: %s: replace: %w", x.display(rel), err)
			}
		}
		dev := unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
		if err := unix.Mknodat(pfd, base, fileType(h.Typeflag)|0o600, int(dev)); err != nil {
			return fmt.Errorf("copy: %s: %w", x.display(rel), err)
		}
		if err := x.metaAt(pfd, base, rel, h); err != nil {
			return err
		}
	default:
		return fmt.Errorf("copy: archive entry %q has an unsupported type %q", h.Name, h.Typeflag)
	}
	x.st.count(h)
	return nil
}

// file writes a regular file under a temporary name and renames it into
// place: a failed copy never leaves a half-written file. A new file
// (assumeNew) is written in place and removed if the copy fails.
func (x *extractor) file(tr *tar.Reader, h *tar.Header, pfd int, base, rel string, assumeNew bool) error {
	tmp := base
	if !assumeNew {
		var rb [6]byte
		rand.Read(rb[:])
		tmp = ".tarcopy-" + hex.EncodeToString(rb[:])
	}
	fd, err := unix.Openat(pfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("copy: %s: %w", x.display(rel), err)
	}
	f := os.NewFile(uintptr(fd), x.display(rel))
	done := false
	defer func() {
		if !done {
			f.Close()
			unix.Unlinkat(pfd, tmp, 0)
		}
	}()
	n, err := io.CopyBuffer(onlyWriter{f}, tr, x.buf)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("copy: %s: %w", x.display(rel), pe.Err)
		}
		return fmt.Errorf("copy: %s: read the archive: %w", x.display(rel), err)
	}
	if n != h.Size {
		return fmt.Errorf("copy: %s: the archive ended inside the file", x.display(rel))
	}
	if err := x.setMeta(fd, false, rel, h); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("copy: %s: %w", x.display(rel), err)
	}
	if tmp == base {
		done = true
		return nil
	}
	if err := unix.Renameat(pfd, tmp, pfd, base); err != nil {
		return fmt.Errorf("copy: %s: %w", x.display(rel), err)
	}
	done = true
	return nil
}

// onlyWriter hides *os.File's ReadFrom, whose copy_file_range attempt
// does not apply to a tar reader.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(b []byte) (int, error) { return o.w.Write(b) }

// meta applies a directory's metadata at the end.
func (x *extractor) meta(rel string, h *tar.Header) error {
	pfd, base, err := x.parent(rel)
	if err != nil {
		return err
	}
	return x.metaAt(pfd, base, rel, h)
}

// fileType is the st_mode file type of an entry that metaAt handles.
func fileType(typ byte) uint32 {
	switch typ {
	case tar.TypeDir:
		return unix.S_IFDIR
	case tar.TypeSymlink:
		return unix.S_IFLNK
	case tar.TypeChar:
		return unix.S_IFCHR
	case tar.TypeBlock:
		return unix.S_IFBLK
	}
	return unix.S_IFIFO
}

// metaAt sets the metadata of the entry base in pfd that this extraction
// made or, for a directory, took over (a directory, symlink, FIFO or
// device node). It is opened first
// with O_PATH|O_NOFOLLOW and checked to be of the entry's type, and
// changed only through that descriptor: someone who can write in the
// destination (a non-root workload, while the guest agent extracts as
// root) may have swapped base for a symlink or a hard link to another
// file since it was made, and a change by name would land on that file.
// O_PATH opens a device node without its driver.
func (x *extractor) metaAt(pfd int, base, rel string, h *tar.Header) error {
	fd, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("copy: %s: %w", x.display(rel), err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("copy: %s: %w", x.display(rel), err)
	}
	if st.Mode&unix.S_IFMT != fileType(h.Typeflag) {
		return fmt.Errorf("copy: %s: replaced by something else while it was copied: refused", x.display(rel))
	}
	return x.setMeta(fd, true, rel, h)
}

// setMeta sets owner, mode and times through fd: the entry's own
// descriptor, a regular file's open one or else an O_PATH one (opath). A
// symlink's own mode cannot be set on Linux, and an O_PATH descriptor
// takes no fchmod: its mode is set through /proc/self/fd, which reaches
// exactly the descriptor's inode (fchmodat2 with AT_EMPTY_PATH would,
// from Linux 6.6 only).
func (x *extractor) setMeta(fd int, opath bool, rel string, h *tar.Header) error {
	if x.chown {
		uid, gid := h.Uid, h.Gid
		if x.o.Owner != nil {
			uid, gid = x.o.Owner.UID, x.o.Owner.GID
		}
		if err := unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("copy: %s: set owner %d:%d: %w", x.display(rel), uid, gid, err)
		}
	}
	if h.Typeflag != tar.TypeSymlink {
		// After chown, which clears setuid and setgid.
		mode := uint32(h.Mode) & 0o7777
		if x.o.Untrusted {
			mode &= 0o777
		}
		var err error
		if opath {
			err = unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode)
		} else {
			err = unix.Fchmod(fd, mode)
		}
		if err != nil {
			return fmt.Errorf("copy: %s: set mode %o: %w", x.display(rel), mode, err)
		}
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(h.ModTime.UnixNano())}
	if !h.AccessTime.IsZero() {
		ts[0] = unix.NsecToTimespec(h.AccessTime.UnixNano())
	}
	if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("copy: %s: set times: %w", x.display(rel), err)
	}
	return nil
}
