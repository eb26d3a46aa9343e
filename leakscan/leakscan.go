// Package leakscan finds byte strings in large files (a guest's RAM, a
// disk) without holding the strings: a caller turns each value into a
// Fingerprint (its length and a keyed hash), zeroes the value, and later
// scans files for the fingerprints.
//
// The hash is a Rabin-Karp polynomial hash modulo the Mersenne prime
// 2^61-1 with a base drawn at random once per process, so fingerprints mean
// nothing outside the process that made them and two distinct strings of
// length n collide with probability at most n/2^61 (a false hit, never a
// missed one: equal bytes always hash equally).
//
// Rolling that hash is a chain of dependent multiplications, one per byte
// per length, which is slow (about 70 MB/s on a 2 GHz core). So the hash is
// only computed where a cheaper keyed tag matches. A fingerprint of a value
// of 15 bytes or more keeps the tags of 8 consecutive 8-byte words of the
// value (its anchor, near the middle, where API keys and PEM blocks are
// random); one of them sits at an 8-aligned stream offset wherever the value
// is, so one pass over the aligned words serves every length. A shorter
// value keeps the tag of its first bytes, tested at every offset. Values
// whose anchor or first bytes would be zero fall back to rolling.
//
// The tags and hashes are keyed, and the keys never leave the process. A tag
// keeps 32 bits of a keyed 64-bit word, so even with the keys it leaves 2^32
// candidates per word: a fingerprint holds no recoverable part of a value
// of 8 bytes or more (shorter values are weak secrets whatever is kept).
// It stays in the process all the same: no exported fields, and it prints
// and encodes as its length only.
//
// Guest RAM files are mostly zero pages; the scanner skips windows that lie
// wholly inside all-zero 4 KiB pages, which is why a value of only zero
// bytes cannot be fingerprinted.
package leakscan

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"slices"
)

// prime is the modulus, 2^61-1.
const prime = 1<<61 - 1

// random64 draws a key.
func random64() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("leakscan: no randomness: " + err.Error()) // crypto/rand never fails on Linux
	}
	return binary.LittleEndian.Uint64(b[:])
}

// This process's keys: base is a random element of [256, prime); tagXor
// and tagMul (odd) key the anchor tags.
var (
	base = func() uint64 {
		for {
			if v := random64() & prime; v >= 256 && v < prime {
				return v
			}
		}
	}()
	tagXor = random64()
	tagMul = random64() | 1
)

// tagOf keys an 8-byte word and keeps only the top 32 bits of the keyed
// product: a tag (plus this process's keys) narrows a word down to 2^32
// candidates, so a fingerprint never holds a recoverable copy of any part
// of its value. Equal words give equal tags; an unequal word matches one in
// 2^32 times, and the full hash then rules it out.
func tagOf(w uint64) uint64 { return ((w ^ tagXor) * tagMul) >> 32 }

// mulmod returns a*b mod 2^61-1 for a, b < 2^61.
func mulmod(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	// a*b = hi*2^64 + lo = (hi<<3 | lo>>61)*2^61 + (lo & prime), and 2^61 = 1.
	r := (hi<<3 | lo>>61) + lo&prime
	if r >= prime {
		r -= prime
	}
	return r
}

// powmod returns base^n mod prime.
func powmod(b uint64, n int) uint64 {
	r := uint64(1)
	for ; n > 0; n >>= 1 {
		if n&1 == 1 {
			r = mulmod(r, b)
		}
		b = mulmod(b, b)
	}
	return r
}

// hashOf is the polynomial hash of p: sum p[i]*base^(len-1-i) mod prime.
func hashOf(p []byte) uint64 {
	var h uint64
	for _, c := range p {
		h = mulmod(h, base) + uint64(c)
		if h >= prime {
			h -= prime
		}
	}
	return h
}

// MaxLen bounds a fingerprinted value, so the scanner's carry-over stays
// small.
const MaxLen = 16 << 20

// Fingerprint stands for one value: its length and keyed hash. It never
// shows the hash: String, GoString and JSON show the length only.
type Fingerprint struct {
	n int
	h uint64
	// anchor is the offset of the first tagged word in the value, tags
	// the tags of the words at anchor+0..7; anchor is -1 for values too
	// short (or with too many zeros) to have one.
	anchor int
	tags   [8]uint64
	// prefix is the tag of the value's first min(n, 8) bytes (as a
	// zero-padded word) for values too short for an anchor; hasPrefix is
	// false when those bytes are all zero.
	prefix    uint64
	hasPrefix bool
}

// minAnchored is the shortest value with an anchor: 8 words at consecutive
// offsets.
const minAnchored = 15

// New fingerprints value. The caller keeps ownership of value (and should
// zero it): the fingerprint holds no copy. A value must be 1 to MaxLen bytes
// and hold a non-zero byte.
func New(value []byte) (Fingerprint, error) {
	if len(value) == 0 {
		return Fingerprint{}, errors.New("leakscan: an empty value cannot be searched for")
	}
	if len(value) > MaxLen {
		return Fingerprint{}, fmt.Errorf("leakscan: a value of %d bytes exceeds the %d a fingerprint may cover", len(value), MaxLen)
	}
	if allZero(value) {
		return Fingerprint{}, fmt.Errorf("leakscan: a value of %d zero bytes cannot be told apart from free memory", len(value))
	}
	f := Fingerprint{n: len(value), h: hashOf(value), anchor: -1}
	if len(value) < minAnchored {
		var w [8]byte
		copy(w[:], value)
		if p := binary.LittleEndian.Uint64(w[:]); p != 0 {
			f.prefix, f.hasPrefix = tagOf(p), true
		}
	}
	// Anchor words must hold a non-zero byte (words in zero pages are
	// skipped); take the first run of 8 nearest the middle.
	if len(value) >= minAnchored {
		last := len(value) - minAnchored
		ok := func(k int) bool {
			for r := range 8 {
				if binary.LittleEndian.Uint64(value[k+r:]) == 0 {
					return false
				}
			}
			return true
		}
		for d := 0; d <= last; d++ {
			for _, k := range []int{last/2 - d, last/2 + d} {
				if f.anchor < 0 && k >= 0 && k <= last && ok(k) {
					f.anchor = k
					for r := range 8 {
						f.tags[r] = tagOf(binary.LittleEndian.Uint64(value[k+r:]))
					}
				}
			}
			if f.anchor >= 0 {
				break
			}
		}
	}
	return f, nil
}

// Len is the length of the value.
func (f Fingerprint) Len() int { return f.n }

// String shows the length only.
func (f Fingerprint) String() string { return fmt.Sprintf("leakscan.Fingerprint(len=%d)", f.n) }

// GoString keeps %#v from printing the hash.
func (f Fingerprint) GoString() string { return f.String() }

// MarshalJSON writes {"len":N}: a fingerprint is not meant to leave the
// process (its key does not).
func (f Fingerprint) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Len int `json:"len"`
	}{f.n})
}

// Hit is one occurrence of a fingerprinted value.
type Hit struct {
	// Index is the fingerprint's index in the slice given to Scan.
	Index int
	// Offset is where the value starts in the stream.
	Offset int64
}

const (
	pageSize = 4096
	// chunkSize is how much is read at a time (a multiple of pageSize).
	chunkSize = 4 << 20
)

var zeroPage [pageSize]byte

func allZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), pageSize)
		if !bytes.Equal(p[:n], zeroPage[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

// group is the fingerprints of one length, with what rolling needs.
type group struct {
	n      int
	hashes []uint64
	index  []int
	// With prefixes (values shorter than 15 bytes whose first bytes are
	// not all zero), windows are found by tagging the word at each
	// position, with no chain from one position to the next, and filter
	// holds the prefix tags instead of hashes. mask keeps a word's first
	// min(n, 8) bytes.
	prefixes []uint64
	mask     uint64
	// out[c] = c*base^n mod prime: what byte c contributes when it leaves
	// the window.
	out [256]uint64
	// filter has bit h&filterMask set for every hash, so most positions
	// are rejected with one load.
	filter [filterWords]uint64
}

const (
	filterBits  = 1 << 14
	filterWords = filterBits / 64
	filterMask  = filterBits - 1
)

// anchorFP is a fingerprint found through its anchor word.
type anchorFP struct {
	tag   uint64
	k, n  int
	h     uint64
	index int
}

// anchors finds the fingerprints that have an anchor, in one pass.
type anchors struct {
	fps []anchorFP // sorted by tag
	// filter has bit tag>>anchorShift set for every tag.
	filter [anchorBits / 64]uint64
}

const (
	anchorBits  = 1 << 16 // 8 KiB: stays in L1
	anchorShift = 32 - 16
)

// scanner is the set of fingerprints to look for.
type scanner struct {
	groups  []*group // fingerprints without an anchor, by length
	anchors *anchors
	maxLen  int
}

func newScanner(fps []Fingerprint) (*scanner, error) {
	byLen := map[int]*group{}
	sc := &scanner{}
	for i, f := range fps {
		if f.n <= 0 || f.n > MaxLen || f.anchor < -1 || (f.anchor >= 0 && f.anchor > f.n-minAnchored) {
			return nil, fmt.Errorf("leakscan: fingerprint %d is not one made by leakscan.New", i)
		}
		sc.maxLen = max(sc.maxLen, f.n)
		if f.anchor >= 0 {
			if sc.anchors == nil {
				sc.anchors = &anchors{}
			}
			a := sc.anchors
			for r, tag := range f.tags {
				a.fps = append(a.fps, anchorFP{tag: tag, k: f.anchor + r, n: f.n, h: f.h, index: i})
				b := tag >> anchorShift
				a.filter[b/64] |= 1 << (b % 64)
			}
			continue
		}
		g := byLen[f.n]
		if g == nil {
			g = &group{n: f.n}
			bn := powmod(base, f.n)
			for c := range g.out {
				g.out[c] = mulmod(uint64(c), bn)
			}
			byLen[f.n] = g
			sc.groups = append(sc.groups, g)
		}
		g.hashes = append(g.hashes, f.h)
		g.index = append(g.index, i)
		g.filter[(f.h&filterMask)/64] |= 1 << (f.h % 64)
		if f.hasPrefix {
			g.prefixes = append(g.prefixes, f.prefix)
		}
	}
	for _, g := range sc.groups {
		if len(g.prefixes) != len(g.hashes) {
			g.prefixes = nil // one value lacks a prefix: roll them all
			continue
		}
		g.filter = [filterWords]uint64{}
		for _, p := range g.prefixes {
			g.filter[(p&filterMask)/64] |= 1 << (p % 64)
		}
		g.mask = ^uint64(0)
		if g.n < 8 {
			g.mask = 1<<(8*g.n) - 1
		}
	}
	if sc.anchors != nil {
		slices.SortFunc(sc.anchors.fps, func(x, y anchorFP) int {
			if x.tag < y.tag {
				return -1
			} else if x.tag > y.tag {
				return 1
			}
			return x.index - y.index
		})
	}
	return sc, nil
}

// scan checks, for every anchored fingerprint, the windows of buf that end
// after old and whose aligned anchor word touches a page that is not all
// zeros (a word wholly in zero pages is zero, and no anchor word is).
func (a *anchors) scan(buf []byte, zero []bool, old int, start int64, hits []Hit) []Hit {
	// Anchor positions t = s+k for window starts s with old < s+n <= len.
	tlo, thi := len(buf), 0
	for _, f := range a.fps {
		tlo = min(tlo, old-f.n+f.k+1)
		thi = max(thi, len(buf)-f.n+f.k+1)
	}
	tlo, thi = max(tlo, 0), min(thi, len(buf)-7)
	pages := (len(buf) + pageSize - 1) / pageSize
	for p := 0; p < pages; {
		if zero[p] {
			p++
			continue
		}
		q := p
		for q < pages && !zero[q] {
			q++
		}
		// Words that touch pages [p, q) start in [p*pageSize-7, q*pageSize);
		// runs are a zero page (more than 7 bytes) apart, so these never
		// overlap.
		lo, hi := max(p*pageSize-7, tlo), min(q*pageSize, thi)
		p = q
		if lo >= hi {
			continue
		}
		// Only aligned words: buf[0] is at a page-aligned stream offset.
		lo = (lo + 7) &^ 7
		if lo >= hi {
			continue
		}
		win := buf[lo : hi+7]
		for t := 0; t+8 <= len(win); t += 8 {
			tg := tagOf(binary.LittleEndian.Uint64(win[t:]))
			if a.filter[tg>>anchorShift/64]&(1<<(tg>>anchorShift%64)) != 0 {
				hits = a.check(buf, lo+t, tg, old, start, hits)
			}
		}
	}
	return hits
}

// check hashes the windows of every fingerprint whose anchor tag is tg,
// placed so that its anchor is at t.
func (a *anchors) check(buf []byte, t int, tg uint64, old int, start int64, hits []Hit) []Hit {
	i, _ := slices.BinarySearchFunc(a.fps, tg, func(f anchorFP, tg uint64) int {
		if f.tag < tg {
			return -1
		} else if f.tag > tg {
			return 1
		}
		return 0
	})
	for ; i < len(a.fps) && a.fps[i].tag == tg; i++ {
		f := &a.fps[i]
		s := t - f.k
		if s < 0 || s+f.n > len(buf) || s+f.n <= old {
			continue
		}
		if hashOf(buf[s:s+f.n]) == f.h {
			hits = append(hits, Hit{Index: f.index, Offset: start + int64(s)})
		}
	}
	return hits
}

// Scan reads r to its end and reports every occurrence of every
// fingerprint, ordered by offset then index. It reads in chunks, keeping the
// last pages of each chunk so a value across a boundary is found, and skips
// windows that lie wholly in all-zero 4 KiB pages.
func Scan(r io.Reader, fps []Fingerprint) ([]Hit, error) {
	sc, err := newScanner(fps)
	if err != nil || len(fps) == 0 {
		return nil, err
	}
	// The carry is whole pages, at least maxLen-1 bytes, so that page
	// boundaries stay aligned with the stream's.
	carryPages := (sc.maxLen - 1 + pageSize - 1) / pageSize
	buf := make([]byte, carryPages*pageSize+chunkSize)
	zero := make([]bool, len(buf)/pageSize+1)
	var (
		hits  []Hit
		have  int   // bytes in buf
		old   int   // bytes in buf already scanned as window ends
		start int64 // stream offset of buf[0]
	)
	for {
		n, rerr := io.ReadFull(r, buf[have:])
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			return hits, fmt.Errorf("leakscan: read at offset %d: %w", start+int64(have), rerr)
		}
		if n == 0 && have == old {
			break
		}
		for p := have / pageSize; p*pageSize < have+n; p++ {
			end := min((p+1)*pageSize, have+n)
			zero[p] = allZero(buf[p*pageSize : end])
		}
		have += n
		if sc.anchors != nil {
			hits = sc.anchors.scan(buf[:have], zero, old, start, hits)
		}
		for _, g := range sc.groups {
			hits = g.scan(buf[:have], zero, old, start, hits)
		}
		if rerr != nil { // the stream ended
			break
		}
		// Keep the last carryPages pages: every window that ends in the
		// next chunk starts in them.
		keep := carryPages * pageSize
		copy(buf, buf[have-keep:have])
		copy(zero, zero[(have-keep)/pageSize:have/pageSize])
		start += int64(have - keep)
		have, old = keep, keep
	}
	slices.SortFunc(hits, func(a, b Hit) int {
		if a.Offset != b.Offset {
			if a.Offset < b.Offset {
				return -1
			}
			return 1
		}
		return a.Index - b.Index
	})
	return hits, nil
}

// scan checks every window of g's length in buf that ends after old (the
// windows ending earlier were checked with the previous chunk) and touches a
// page that is not all zeros.
func (g *group) scan(buf []byte, zero []bool, old int, start int64, hits []Hit) []Hit {
	n := g.n
	if len(buf) < n {
		return hits
	}
	// Window starts s run over [lo, hi): ends s+n in (old, len(buf)].
	lo, hi := max(0, old-n+1), len(buf)-n+1
	pages := (len(buf) + pageSize - 1) / pageSize
	for p := 0; p < pages; {
		if zero[p] {
			p++
			continue
		}
		q := p
		for q < pages && !zero[q] {
			q++
		}
		// Non-zero pages [p, q): windows that touch them start in
		// (p*pageSize-n, q*pageSize). Merge with the following runs whose
		// range overlaps, so each stretch is hashed once.
		a, b := p*pageSize-n+1, q*pageSize
		for q < pages {
			r := q
			for r < pages && zero[r] {
				r++
			}
			if r == pages || r*pageSize-n+1 > b {
				break
			}
			for r < pages && !zero[r] {
				r++
			}
			b, q = r*pageSize, r
		}
		p = q
		a, b = max(a, lo), min(b, hi)
		if a < b {
			if g.prefixes != nil {
				hits = g.tagScan(buf, a, b, start, hits)
			} else {
				hits = g.roll(buf, a, b, start, hits)
			}
		}
	}
	return hits
}

// tagScan checks every window start in [a, b) by the tag of its first
// bytes, hashing the whole window only where a tag matches. The last
// starts, whose word would run past buf, are hashed directly.
func (g *group) tagScan(buf []byte, a, b int, start int64, hits []Hit) []Hit {
	n := g.n
	end := min(b, len(buf)-7)
	for s := a; s < end; s++ {
		t := tagOf(binary.LittleEndian.Uint64(buf[s:]) & g.mask)
		if g.maybe(t) {
			for i, p := range g.prefixes {
				if p == t && hashOf(buf[s:s+n]) == g.hashes[i] {
					hits = append(hits, Hit{Index: g.index[i], Offset: start + int64(s)})
				}
			}
		}
	}
	for s := max(a, end); s < b; s++ {
		hits = g.check(hashOf(buf[s:s+n]), start+int64(s), hits)
	}
	return hits
}

// maybe reports whether h may be one of the group's hashes.
func (g *group) maybe(h uint64) bool { return g.filter[(h&filterMask)/64]&(1<<(h%64)) != 0 }

// check records a hit for every fingerprint whose hash is h.
func (g *group) check(h uint64, off int64, hits []Hit) []Hit {
	for i, want := range g.hashes {
		if h == want {
			hits = append(hits, Hit{Index: g.index[i], Offset: off})
		}
	}
	return hits
}

// next slides a window's hash by one byte: h*base - out*base^n + in. The
// product is reduced below prime; adding prime keeps the subtraction
// non-negative, and the sum stays below 2*prime+256.
func (g *group) next(h uint64, out, in byte) uint64 {
	h = mulmod(h, base) + prime - g.out[out] + uint64(in)
	if h >= prime {
		h -= prime
	}
	if h >= prime {
		h -= prime
	}
	return h
}

// roll hashes the window at a, then slides it to every start in [a, b).
func (g *group) roll(buf []byte, a, b int, start int64, hits []Hit) []Hit {
	n := g.n
	h := hashOf(buf[a : a+n])
	for s := a; ; s++ {
		if g.maybe(h) {
			hits = g.check(h, start+int64(s), hits)
		}
		if s+1 >= b {
			return hits
		}
		h = g.next(h, buf[s], buf[s+n])
	}
}

// ScanFile scans the file at path (see Scan).
func ScanFile(path string, fps []Fingerprint) ([]Hit, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("leakscan: %w", err)
	}
	defer f.Close()
	hits, err := Scan(f, fps)
	if err != nil {
		return hits, fmt.Errorf("leakscan: %s: %w", path, err)
	}
	return hits, nil
}
