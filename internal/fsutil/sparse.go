package fsutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// VisitFunc sees the data a sparse copy reads, in order of offset; its
// error stops the copy.
type VisitFunc func(off int64, p []byte) error

// copyChunk is the read size of a copy that looks at the data.
const copyChunk = 1 << 20

// CopySparse copies the data regions of in (up to size) to the same
// offsets of out, which must be at least size bytes long (truncated). Holes
// (SEEK_HOLE) are not read. Without visit the data moves in the kernel
// (copy_file_range, a clone where the file system shares extents); with
// visit it is read into memory, shown to visit, and blocks that are all
// zero are left as holes in out (guest RAM files are mostly zeros).
func CopySparse(ctx context.Context, in, out *os.File, size int64, visit VisitFunc) error {
	ifd := int(in.Fd())
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(ifd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole remains
		}
		hole := size
		if err != nil {
			data = off // no SEEK_DATA support: copy everything
		} else if hole, err = unix.Seek(ifd, data, unix.SEEK_HOLE); err != nil {
			return err
		}
		hole = min(hole, size)
		if visit == nil {
			err = copyRange(in, out, data, hole-data)
		} else {
			err = copyVisit(ctx, in, out, data, hole-data, visit)
		}
		if err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies n bytes at off from in to out, in the kernel when it can.
func copyRange(in, out *os.File, off, n int64) error {
	roff, woff := off, off
	for n > 0 {
		c, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(min(n, 1<<30)), 0)
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				_, err := io.Copy(io.NewOffsetWriter(out, woff), io.NewSectionReader(in, roff, n))
				return err
			}
			return err
		}
		if c == 0 {
			return fmt.Errorf("copy: unexpected end of %s at %d", in.Name(), roff)
		}
		n -= int64(c)
	}
	return nil
}

var zeroBlock [4096]byte

// copyVisit copies n bytes at off through a buffer that visit sees.
func copyVisit(ctx context.Context, in, out *os.File, off, n int64, visit VisitFunc) error {
	buf := make([]byte, copyChunk)
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := buf[:min(n, copyChunk)]
		if _, err := in.ReadAt(p, off); err != nil {
			return fmt.Errorf("copy: read %s at %d: %w", in.Name(), off, err)
		}
		if err := visit(off, p); err != nil {
			return err
		}
		for i := 0; i < len(p); i += len(zeroBlock) {
			b := p[i:min(i+len(zeroBlock), len(p))]
			if bytes.Equal(b, zeroBlock[:len(b)]) {
				continue
			}
			if _, err := out.WriteAt(b, off+int64(i)); err != nil {
				return fmt.Errorf("copy: write %s: %w", out.Name(), err)
			}
		}
		off += int64(len(p))
		n -= int64(len(p))
	}
	return nil
}

// CopySparseFile copies src to a new file dst (0600) of size bytes with
// CopySparse. dst is written through a temporary file, synced, and linked
// into place, so a crash leaves no half dst and an existing dst is never
// replaced.
func CopySparseFile(ctx context.Context, src, dst string, size int64, visit VisitFunc) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return CopySparseFrom(ctx, in, dst, size, visit)
}

// CopySparseFrom is CopySparseFile from an open file (a memfd, say).
func CopySparseFrom(ctx context.Context, in *os.File, dst string, size int64, visit VisitFunc) (err error) {
	out, err := os.CreateTemp(filepath.Dir(dst), TempPrefix+filepath.Base(dst)+"-*")
	if err != nil {
		return err
	}
	tmp := out.Name()
	defer func() {
		out.Close()
		os.Remove(tmp)
	}()
	if err := out.Truncate(size); err != nil {
		return err
	}
	if err := CopySparse(ctx, in, out, size, visit); err != nil {
		return err
	}
	if err := out.Sync(); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	// link fails with EEXIST instead of replacing a file created meanwhile.
	if err := os.Link(tmp, dst); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists", dst)
		}
		return err
	}
	return SyncDir(filepath.Dir(dst))
}
