package kernel

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Bounds on what decompression may produce: a package is the user's choice,
// not trusted to be small. The pinned vmlinux is 53 MB, its largest module
// (overlay) 355 KB.
const (
	maxVmlinuxSize = 1 << 30
	maxModuleSize  = 64 << 20
)

// decompressor returns a reader of r decompressed as format (a name from
// payloadFormat) and a function that frees it.
func decompressor(format string, r io.Reader) (io.Reader, func(), error) {
	switch format {
	case "lz4":
		return lz4.NewReader(r), func() {}, nil
	case "gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case "zstd":
		// Windows as large as zstd --ultra -22 uses (the kernel's choice).
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<28), zstd.WithDecoderMaxMemory(maxVmlinuxSize))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	case "xz":
		xr, err := xzReader(r)
		if err != nil {
			return nil, nil, err
		}
		return xr, func() {}, nil
	}
	return nil, nil, fmt.Errorf("%s compression is not supported (lz4, gzip, zstd and xz are)", format)
}

// limitedReader fails a read past max bytes instead of ending quietly, so a
// too-large output is an error rather than a truncated file.
type limitedReader struct {
	r         io.Reader
	left, max int64
	what      string
}

func newLimitedReader(r io.Reader, max int64, what string) *limitedReader {
	return &limitedReader{r: r, left: max, max: max, what: what}
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1] // one byte more than allowed tells "too large" from "exactly max"
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, fmt.Errorf("%s decompresses to more than %d MiB", l.what, l.max>>20)
	}
	return n, err
}

// moduleSuffixes are the module file names kmod loads: plain and
// compressed (Debian ships .ko, Ubuntu .ko.zst, Fedora .ko.xz).
var moduleSuffixes = map[string]string{".ko": "", ".ko.zst": "zstd", ".ko.xz": "xz", ".ko.gz": "gzip"}

// moduleFormat returns the compression of a module file ("" for a plain
// .ko) and whether the name is a module's at all.
func moduleFormat(name string) (string, bool) {
	i := strings.LastIndex(name, ".ko")
	if i <= 0 {
		return "", false
	}
	format, ok := moduleSuffixes[name[i:]]
	return format, ok
}

// readModule returns a module's ELF bytes, decompressed when its name says
// it is compressed.
func readModule(path string) ([]byte, error) {
	format, _ := moduleFormat(path)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	var r io.Reader = f
	if format != "" {
		dec, free, err := decompressor(format, f)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", path, err)
		}
		defer free()
		r = dec
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(newLimitedReader(r, maxModuleSize, "it")); err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	return b.Bytes(), nil
}
