package kernel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/microagent-dev/microagent/internal/fsutil"
)

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY: the note that gives a
// kernel's 32-bit PVH entry point. QEMU boots an ELF vmlinux only through it.
const xenElfnotePhys32Entry = 18

// Offsets in the x86 boot protocol's setup header (Documentation/arch/x86/boot.rst).
const (
	bzSetupSects    = 0x1f1 // number of 512-byte setup sectors (0 means 4)
	bzHeaderMagic   = 0x202 // "HdrS"
	bzVersion       = 0x206 // boot protocol version
	bzPayloadOffset = 0x248 // payload offset from the protected-mode code (>= 2.08)
	bzPayloadLength = 0x24c // payload length
	bzMinHeaderSize = 0x250
)

// Magic numbers of the compressed payloads a bzImage may carry.
var (
	magicLZ4Legacy = []byte{0x02, 0x21, 0x4c, 0x18}
	magicGzip      = []byte{0x1f, 0x8b}
	magicXZ        = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicZstd      = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicBzip2     = []byte{'B', 'Z', 'h'}
	magicLZMA      = []byte{0x5d, 0x00, 0x00}
	magicLZO       = []byte{0x89, 'L', 'Z', 'O'}
	magicELF       = []byte{0x7f, 'E', 'L', 'F'}
)

// bzPayload locates the compressed kernel inside a bzImage and returns its
// offset and length in the file.
func bzPayload(f io.ReaderAt, size int64) (off, n int64, err error) {
	if size < bzMinHeaderSize {
		return 0, 0, errors.New("too small to be a bzImage")
	}
	hdr := make([]byte, bzMinHeaderSize)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return 0, 0, fmt.Errorf("read boot header: %w", err)
	}
	if string(hdr[bzHeaderMagic:bzHeaderMagic+4]) != "HdrS" {
		return 0, 0, errors.New("no x86 boot header (HdrS): not a bzImage")
	}
	if v := binary.LittleEndian.Uint16(hdr[bzVersion:]); v < 0x208 {
		return 0, 0, fmt.Errorf("boot protocol %d.%02d is too old to locate the payload (need 2.08)", v>>8, v&0xff)
	}
	sects := int64(hdr[bzSetupSects])
	if sects == 0 {
		sects = 4
	}
	off = (sects+1)*512 + int64(binary.LittleEndian.Uint32(hdr[bzPayloadOffset:]))
	n = int64(binary.LittleEndian.Uint32(hdr[bzPayloadLength:]))
	if n == 0 || off+n > size {
		return 0, 0, fmt.Errorf("payload (offset %d, length %d) lies outside the %d-byte file", off, n, size)
	}
	return off, n, nil
}

// payloadFormat names a compressed payload by its magic number.
func payloadFormat(head []byte) string {
	switch {
	case bytes.HasPrefix(head, magicLZ4Legacy):
		return "lz4"
	case bytes.HasPrefix(head, magicGzip):
		return "gzip"
	case bytes.HasPrefix(head, magicXZ):
		return "xz"
	case bytes.HasPrefix(head, magicZstd):
		return "zstd"
	case bytes.HasPrefix(head, magicBzip2):
		return "bzip2"
	case bytes.HasPrefix(head, magicLZO):
		return "lzo"
	case bytes.HasPrefix(head, magicLZMA):
		return "lzma"
	case bytes.HasPrefix(head, magicELF):
		return "uncompressed"
	}
	return "unknown"
}

// extractVmlinux decompresses the ELF kernel inside the bzImage at src into
// dst (created 0600) and returns its SHA-256. Debian's cloud kernel is LZ4
// compressed (the kernel's variant of the legacy frame, which pierrec/lz4
// reads), Ubuntu's and Fedora's use zstd or xz, gzip is the kernel's
// default. The result must be an ELF with a PVH entry note, since that is how
// QEMU boots an uncompressed kernel.
func extractVmlinux(ctx context.Context, src, dst string) (string, error) {
	f, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("open kernel image: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("kernel image %s: %w", src, err)
	}
	off, n, err := bzPayload(f, st.Size())
	if err != nil {
		return "", fmt.Errorf("kernel image %s: %w", src, err)
	}
	head := make([]byte, 8)
	if _, err := f.ReadAt(head, off); err != nil {
		return "", fmt.Errorf("kernel image %s: read payload: %w", src, err)
	}
	format := payloadFormat(head)
	// The kernel's build appends the decompressed size (32-bit little
	// endian) to zstd and xz payloads; zstd would read it as a second frame.
	wantSize := int64(-1)
	if format == "zstd" || format == "xz" {
		if n < 4 {
			return "", fmt.Errorf("kernel image %s: %s payload of %d bytes is too short", src, format, n)
		}
		var tail [4]byte
		if _, err := f.ReadAt(tail[:], off+n-4); err != nil {
			return "", fmt.Errorf("kernel image %s: read payload: %w", src, err)
		}
		wantSize = int64(binary.LittleEndian.Uint32(tail[:]))
		n -= 4
	}
	dec, free, err := decompressor(format, io.NewSectionReader(f, off, n))
	if err != nil {
		return "", fmt.Errorf("kernel image %s: payload: %w: "+
			"extract the vmlinux yourself (linux/scripts/extract-vmlinux) and pass it with --kernel", src, err)
	}
	defer free()

	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", fmt.Errorf("create vmlinux: %w", err)
	}
	defer out.Close()
	h := sha256.New()
	got, err := io.Copy(io.MultiWriter(out, h), fsutil.ContextReader(ctx, newLimitedReader(dec, maxVmlinuxSize, "the payload")))
	if err != nil {
		return "", fmt.Errorf("kernel image %s: decompress: %w", src, err)
	}
	if wantSize >= 0 && got&0xffffffff != wantSize {
		return "", fmt.Errorf("kernel image %s: the %s payload decompresses to %d bytes, but its trailer says %d: the image is damaged",
			src, format, got, wantSize)
	}
	if err := out.Sync(); err != nil {
		return "", fmt.Errorf("write vmlinux %s: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		return "", fmt.Errorf("write vmlinux %s: %w", dst, err)
	}
	if _, err := pvhEntry(dst); err != nil {
		return "", fmt.Errorf("kernel image %s: decompressed kernel: %w", src, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// pvhEntry checks that path is an x86-64 ELF kernel and returns its PVH entry
// point (the XEN_ELFNOTE_PHYS32_ENTRY note).
func pvhEntry(path string) (uint64, error) {
	ef, err := elf.Open(path)
	if err != nil {
		return 0, fmt.Errorf("%s is not an ELF file: %w", path, err)
	}
	defer ef.Close()
	if ef.Machine != elf.EM_X86_64 {
		return 0, fmt.Errorf("%s is an ELF for %s, not x86-64", path, ef.Machine)
	}
	for _, p := range ef.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data, err := io.ReadAll(io.LimitReader(p.Open(), 1<<20))
		if err != nil {
			return 0, fmt.Errorf("%s: read ELF notes: %w", path, err)
		}
		if entry, ok := findXenNote(data, ef.ByteOrder, xenElfnotePhys32Entry); ok {
			return entry, nil
		}
	}
	return 0, fmt.Errorf("%s has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); QEMU cannot boot it as an ELF: "+
		"use a kernel built with CONFIG_PVH=y, or pass its bzImage", path)
}

// findXenNote walks ELF notes (namesz, descsz, type, name, desc; each padded
// to 4 bytes) for a "Xen" note of the given type and returns its value.
func findXenNote(data []byte, bo binary.ByteOrder, typ uint32) (uint64, bool) {
	align := func(n uint32) uint64 { return (uint64(n) + 3) &^ 3 }
	for len(data) >= 12 {
		namesz, descsz, t := bo.Uint32(data), bo.Uint32(data[4:]), bo.Uint32(data[8:])
		data = data[12:]
		nlen, dlen := align(namesz), align(descsz)
		if nlen+dlen > uint64(len(data)) {
			return 0, false
		}
		name := string(bytes.TrimRight(data[:namesz], "\x00"))
		desc := data[nlen : nlen+uint64(descsz)]
		data = data[nlen+dlen:]
		if name != "Xen" || t != typ {
			continue
		}
		switch len(desc) {
		case 4:
			return uint64(bo.Uint32(desc)), true
		case 8:
			return bo.Uint64(desc), true
		}
		return 0, true
	}
	return 0, false
}

// kernelKind tells an ELF vmlinux from a bzImage.
func kernelKind(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, bzMinHeaderSize)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, magicELF):
		return "elf", nil
	case len(head) >= bzHeaderMagic+4 && string(head[bzHeaderMagic:bzHeaderMagic+4]) == "HdrS":
		return "bzimage", nil
	}
	return "", fmt.Errorf("%s is neither an ELF vmlinux nor an x86 bzImage", path)
}
