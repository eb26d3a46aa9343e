package kernel

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// An xz reader of our own around ulikunitz/xz's LZMA2 decoder, because that
// package's xz reader takes one filter only, and the kernel's own xz payloads
// (scripts/xz_wrap.sh) put the x86 BCJ filter before LZMA2. It reads the
// blocks of the first stream (the format: tukaani.org's xz-file-format.txt),
// checks each block's header CRC and integrity check, and stops at the index:
// what follows (index, footer, the kernel's 4-byte size) is not needed to
// trust the data, as every block is checked.

// xz filter IDs and limits.
const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
	// xzMaxDict bounds the LZMA2 dictionary a file may ask for (it is
	// allocated up front): the kernel uses 32 MiB, modules 1 MiB, xz -9 64.
	xzMaxDict = 256 << 20
)

// xzReader returns a reader of the data in the xz stream r.
func xzReader(r io.Reader) (io.Reader, error) {
	br := &countingReader{r: bufio.NewReaderSize(r, 64<<10)}
	var hdr [12]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, fmt.Errorf("xz: stream header: %w", err)
	}
	if !bytes.HasPrefix(hdr[:], magicXZ) {
		return nil, errors.New("xz: not an xz stream (bad magic)")
	}
	if crc32.ChecksumIEEE(hdr[6:8]) != binary.LittleEndian.Uint32(hdr[8:]) {
		return nil, errors.New("xz: stream header CRC mismatch")
	}
	if hdr[6] != 0 || hdr[7]&0xf0 != 0 {
		return nil, fmt.Errorf("xz: unsupported stream flags %02x%02x", hdr[6], hdr[7])
	}
	check := hdr[7] & 0x0f
	if _, err := newXZCheck(check); err != nil {
		return nil, err
	}
	return &xzStream{src: br, check: check}, nil
}

// xzStream reads block after block until the index.
type xzStream struct {
	src   *countingReader
	check byte
	block io.Reader // the current block's filtered data
	lz    *lzma.Reader2
	sum   hash.Hash // the current block's check over its output
	done  bool
	err   error
}

func (s *xzStream) Read(p []byte) (int, error) {
	for s.err == nil {
		if s.done {
			return 0, io.EOF
		}
		if s.block == nil {
			s.err = s.nextBlock()
			continue
		}
		n, err := s.block.Read(p)
		s.sum.Write(p[:n])
		if errors.Is(err, io.EOF) {
			s.err = s.endBlock()
			s.block = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			s.err = fmt.Errorf("xz: %w", err)
		}
		if n > 0 {
			return n, nil
		}
	}
	return 0, s.err
}

// nextBlock reads a block header and sets up its filters, or ends the
// stream at the index indicator.
func (s *xzStream) nextBlock() error {
	size, err := s.src.ReadByte()
	if err != nil {
		return fmt.Errorf("xz: block header: %w", noEOF(err))
	}
	if size == 0 { // the index: every block has been read
		s.done = true
		return nil
	}
	hdr := make([]byte, (int(size)+1)*4)
	hdr[0] = size
	if _, err := io.ReadFull(s.src, hdr[1:]); err != nil {
		return fmt.Errorf("xz: block header: %w", noEOF(err))
	}
	body := hdr[:len(hdr)-4]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(hdr[len(hdr)-4:]) {
		return errors.New("xz: block header CRC mismatch")
	}
	flags := body[1]
	if flags&0x3c != 0 {
		return fmt.Errorf("xz: unsupported block flags %02x", flags)
	}
	fr := bytes.NewReader(body[2:])
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} { // compressed and uncompressed size: not needed
		if present {
			if _, err := binary.ReadUvarint(fr); err != nil {
				return errors.New("xz: bad size in block header")
			}
		}
	}
	var x86 *bcjX86Reader
	dict := -1
	for i := 0; i <= int(flags&0x03); i++ {
		id, err1 := binary.ReadUvarint(fr)
		psize, err2 := binary.ReadUvarint(fr)
		if err1 != nil || err2 != nil || psize > uint64(fr.Len()) {
			return errors.New("xz: bad filter flags in block header")
		}
		props := make([]byte, psize)
		_, _ = fr.Read(props)
		last := i == int(flags&0x03)
		switch {
		case id == xzFilterX86 && !last && x86 == nil && (psize == 0 || psize == 4):
			x86 = &bcjX86Reader{}
			if psize == 4 {
				x86.pos = binary.LittleEndian.Uint32(props)
			}
		case id == xzFilterLZMA2 && last && psize == 1:
			if dict, err = lzma2Dict(props[0]); err != nil {
				return err
			}
		default:
			return fmt.Errorf("xz: unsupported filter chain (filter %#x at %d of %d): only LZMA2, optionally after x86 BCJ, is read",
				id, i+1, flags&0x03+1)
		}
	}
	for fr.Len() > 0 {
		if b, _ := fr.ReadByte(); b != 0 {
			return errors.New("xz: non-zero block header padding")
		}
	}
	s.src.n = 0
	if s.lz, err = (lzma.Reader2Config{DictCap: dict}).NewReader2(s.src); err != nil {
		return fmt.Errorf("xz: %w", err)
	}
	s.block = s.lz
	if x86 != nil {
		x86.r = s.lz
		s.block = x86
	}
	s.sum, _ = newXZCheck(s.check)
	return nil
}

// endBlock skips the block padding and compares the block's check.
func (s *xzStream) endBlock() error {
	for s.src.n%4 != 0 { // ReadByte counts
		b, err := s.src.ReadByte()
		if err != nil {
			return fmt.Errorf("xz: block padding: %w", noEOF(err))
		}
		if b != 0 {
			return errors.New("xz: non-zero block padding")
		}
	}
	want := make([]byte, s.sum.Size())
	if _, err := io.ReadFull(s.src, want); err != nil {
		return fmt.Errorf("xz: block check: %w", noEOF(err))
	}
	got := s.sum.Sum(nil)
	if s.check == 0x01 || s.check == 0x04 { // CRCs are stored little-endian, Sum is big-endian
		for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
			got[i], got[j] = got[j], got[i]
		}
	}
	if !bytes.Equal(got, want) {
		return errors.New("xz: block check mismatch: the data is damaged")
	}
	return nil
}

// noEOF turns a clean EOF inside a structure into ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// lzma2Dict decodes LZMA2's one property byte, the dictionary size.
func lzma2Dict(b byte) (int, error) {
	if b > 40 {
		return 0, fmt.Errorf("xz: bad LZMA2 dictionary size byte %d", b)
	}
	d := uint64(2|b&1) << (b/2 + 11)
	if d > xzMaxDict {
		return 0, fmt.Errorf("xz: LZMA2 dictionary of %d MiB is over the %d MiB accepted", d>>20, xzMaxDict>>20)
	}
	return max(int(d), lzma.MinDictCap), nil
}

// newXZCheck returns the hash of an xz check type.
func newXZCheck(check byte) (hash.Hash, error) {
	switch check {
	case 0x00:
		return noCheck{}, nil
	case 0x01:
		return crc32.NewIEEE(), nil
	case 0x04:
		return crc64.New(crc64.MakeTable(crc64.ECMA)), nil
	case 0x0a:
		return sha256.New(), nil
	}
	return nil, fmt.Errorf("xz: unsupported check type %#x", check)
}

// noCheck is xz's check type "none".
type noCheck struct{}

func (noCheck) Write(p []byte) (int, error) { return len(p), nil }
func (noCheck) Sum(b []byte) []byte         { return b }
func (noCheck) Reset()                      {}
func (noCheck) Size() int                   { return 0 }
func (noCheck) BlockSize() int              { return 1 }

// countingReader counts the bytes read through it since n was last reset,
// for the block padding, and is an io.ByteReader so that the LZMA2 decoder
// reads no further than its data.
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

// bcjX86Reader undoes the x86 BCJ filter: call and jump targets (E8/E9
// opcodes) were made absolute for better compression and are turned back
// into relative ones. The algorithm is xz-embedded's bcj_x86 (public domain).
type bcjX86Reader struct {
	r        io.Reader
	buf      [64 << 10]byte
	off      int    // next byte of buf to hand out
	filtered int    // buf[:filtered] is done
	n        int    // buf[:n] holds data
	pos      uint32 // stream position of buf[filtered]
	prevMask uint32
	eof      bool
}

func (b *bcjX86Reader) Read(p []byte) (int, error) {
	for b.off == b.filtered {
		if b.eof {
			return 0, io.EOF
		}
		// Keep the unfiltered tail (at most 4 bytes) and read more.
		b.n = copy(b.buf[:], b.buf[b.filtered:b.n])
		b.off, b.filtered = 0, 0
		m, err := io.ReadFull(b.r, b.buf[b.n:])
		b.n += m
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			b.eof = true
		} else if err != nil {
			return 0, err
		}
		k := bcjX86(b.buf[:b.n], b.pos, &b.prevMask)
		b.pos += uint32(k)
		b.filtered = k
		if b.eof {
			b.filtered = b.n // the last bytes cannot hold a whole instruction
		}
	}
	n := copy(p, b.buf[b.off:b.filtered])
	b.off += n
	return n, nil
}

// bcjX86 decodes buf in place, buf[0] being at stream position pos, and
// returns how many bytes are final; the rest must be passed again with more
// data after them.
func bcjX86(buf []byte, pos uint32, prevMask *uint32) int {
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	msByte := func(b byte) bool { return b == 0x00 || b == 0xff }
	if len(buf) <= 4 {
		return 0
	}
	size := len(buf) - 4
	prevPos := -1
	mask := *prevMask
	i := 0
	for ; i < size; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		d := i - prevPos
		if d > 3 {
			mask = 0
		} else {
			mask = (mask << (d - 1)) & 7
			if mask != 0 {
				if !allowed[mask] || msByte(buf[i+4-int(bitNum[mask])]) {
					prevPos = i
					mask = mask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !msByte(buf[i+4]) {
			mask = mask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (pos + uint32(i) + 5)
			if mask == 0 {
				break
			}
			j := bitNum[mask] * 8
			if !msByte(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01ffffff
		dest |= 0 - (dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
	if d := i - prevPos; d > 3 {
		*prevMask = 0
	} else {
		*prevMask = mask << (d - 1)
	}
	return i
}
