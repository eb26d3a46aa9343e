// Package rootfs turns stored OCI images into read-only ext4 root disks and
// makes the empty ext4 disks that hold a guest's writes.
//
// A root disk is built once per manifest digest, at
// <state>/rootfs/<digest hex>.ext4: the image's layers are flattened with
// go-containerregistry's mutate.Extract (which applies whiteouts) and
// streamed into hcsshim's tar2ext4. The result carries ext4's read-only
// feature and almost no free space, so guests mount it read-only under an
// overlay whose upper layer lives on a writable disk (NewWritableDisk).
package rootfs

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/Microsoft/hcsshim/ext4/tar2ext4"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/internal/fsutil"
)

// maxRootDisk bounds a flattened image. tar2ext4 reserves group descriptors
// for this size up front (64 KiB of metadata at 128 GiB) and fails cleanly
// past it.
const maxRootDisk = 128 << 30

// tmpPrefix marks files being built; they are never returned as results.
// It is fsutil's, since Build and ensureTemplate write through
// fsutil.WriteAtomic and Prune must recognise their leftovers.
const tmpPrefix = fsutil.TempPrefix

// Path returns where the root disk of img is (or will be) cached.
func Path(h home.Home, img *image.Image) string {
	return h.Path(home.RootfsDir, img.Digest.Hex+".ext4")
}

// Ensure returns the read-only ext4 root disk of img, building it when it
// is not cached yet. The build writes a temporary file in the same folder
// and renames it into place, so a failure (a full disk, ctx cancelled)
// leaves no entry. Concurrent calls for one image build it once: the others
// wait on a lock and then find it.
func Ensure(ctx context.Context, h home.Home, img *image.Image) (string, error) {
	final := Path(h, img)
	if fi, err := os.Stat(final); err == nil && fi.Mode().IsRegular() {
		return final, nil
	}
	dir, err := h.Ensure(home.RootfsDir)
	if err != nil {
		return "", err
	}
	unlock, err := lock(ctx, filepath.Join(dir, img.Digest.Hex+".lock"))
	if err != nil {
		return "", fmt.Errorf("root disk for %s: %w", img.Ref, err)
	}
	defer unlock()
	if fi, err := os.Stat(final); err == nil && fi.Mode().IsRegular() {
		return final, nil // built by another process while we waited
	}
	v, err := img.Open()
	if err != nil {
		return "", fmt.Errorf("root disk for %s: %w", img.Ref, err)
	}
	if err := Build(ctx, v, final); err != nil {
		return "", fmt.Errorf("root disk for %s: %w", img.Ref, err)
	}
	return final, nil
}

// Build flattens img and writes it as an ext4 file system to dst (through a
// temporary file beside it and a rename). File modes (setuid included),
// ownership, symlinks, hard links, device nodes and PAX xattrs are kept.
func Build(ctx context.Context, img v1.Image, dst string) error {
	err := fsutil.WriteAtomic(dst, 0o600, func(f *os.File) error { return convert(ctx, img, f) })
	if errors.Is(err, syscall.ENOSPC) {
		err = fmt.Errorf("%w (the disk holding %s is full: free space, or prune images and root disks)", err, filepath.Dir(dst))
	}
	return err
}

// convert streams the flattened img into f as an ext4 file system.
func convert(ctx context.Context, img v1.Image, f *os.File) error {
	flat := mutate.Extract(img)
	defer flat.Close()
	pr, pw := io.Pipe()
	reorderDone := make(chan error, 1)
	go func() {
		// Large buffers on both sides cut the hand-offs between the three
		// pipeline stages (flatten, reorder, convert).
		bw := bufio.NewWriterSize(pw, 1<<20)
		err := reorderLinks(bufio.NewReaderSize(fsutil.ContextReader(ctx, flat), 1<<20), bw)
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
		reorderDone <- err
	}()
	convErr := tar2ext4.ConvertTarToExt4(pr, f, tar2ext4.MaximumDiskSize(maxRootDisk))
	// Unblock the producer if the converter stopped early.
	pr.CloseWithError(errConverterDone)
	reorderErr := <-reorderDone
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case reorderErr != nil && !errors.Is(reorderErr, errConverterDone):
		return fmt.Errorf("flatten image: %w", reorderErr)
	case convErr != nil:
		return fmt.Errorf("convert to ext4: %w", convErr)
	}
	return nil
}

var errConverterDone = errors.New("ext4 converter stopped")

// reorderLinks copies the flattened tar from r to w, moving hard links to
// the end. mutate.Extract emits the top layer first, so a hard link in an
// upper layer can precede its target from a lower one, and tar2ext4 can
// only link to files it has already written.
func reorderLinks(r io.Reader, w io.Writer) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	written := map[string]bool{}
	var links []*tar.Header
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if h.Typeflag == tar.TypeLink {
			links = append(links, h)
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		if h.Typeflag != tar.TypeDir {
			written[cleanName(h.Name)] = true
		}
	}
	for _, h := range links {
		if !written[cleanName(h.Linkname)] {
			// Its target was deleted by a later layer's whiteout; the
			// content is gone from the flattened stream.
			return fmt.Errorf("hard link /%s -> /%s: the target is not in the image (deleted by a later layer?)", cleanName(h.Name), cleanName(h.Linkname))
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		written[cleanName(h.Name)] = true
	}
	return tw.Close()
}

func cleanName(n string) string { return path.Clean("/" + n)[1:] }

// lock takes an exclusive flock on path, giving up when ctx ends.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	// A blocking flock cannot be interrupted by ctx, so poll a
	// non-blocking one (the holder is usually a build of a few seconds).
	for delay := time.Millisecond; ; {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// Prune deletes the cached root disks of images no longer in store, and
// leftovers of interrupted builds, and returns the bytes freed. Disks being
// built (their lock is held) are left alone. A running guest keeps using a
// deleted disk it has open.
func Prune(h home.Home, store *image.Store) (int64, error) {
	imgs, err := store.List()
	if err != nil {
		return 0, err
	}
	keep := map[string]bool{}
	for _, img := range imgs {
		keep[img.Digest.Hex] = true
	}
	dir := h.Path(home.RootfsDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("prune root disks: %w", err)
	}
	var freed int64
	for _, e := range entries {
		n := e.Name()
		hex, _, _ := strings.Cut(strings.TrimPrefix(n, tmpPrefix), ".")
		if keep[hex] && !strings.HasPrefix(n, tmpPrefix) {
			continue
		}
		if strings.HasSuffix(n, ".lock") {
			continue
		}
		// Skip disks whose build is in progress.
		unlock, err := tryLock(filepath.Join(dir, hex+".lock"))
		if err != nil {
			continue
		}
		p := filepath.Join(dir, n)
		fi, err := os.Lstat(p)
		if err == nil && os.Remove(p) == nil {
			freed += fi.Size()
		}
		if !keep[hex] {
			_ = os.Remove(filepath.Join(dir, hex+".lock"))
		}
		unlock()
	}
	return freed, nil
}

// tryLock takes an exclusive flock on path without waiting.
func tryLock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
