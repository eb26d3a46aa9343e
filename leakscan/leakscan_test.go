package leakscan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func mustFP(t testing.TB, v []byte) Fingerprint {
	t.Helper()
	f, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	r.Read(b)
	return b
}

// naive finds every occurrence of each value, the slow obvious way.
func naive(data []byte, values [][]byte) []Hit {
	var hits []Hit
	for i, v := range values {
		for off := 0; ; off++ {
			k := bytes.Index(data[off:], v)
			if k < 0 {
				break
			}
			off += k
			hits = append(hits, Hit{Index: i, Offset: int64(off)})
		}
	}
	slices.SortFunc(hits, func(a, b Hit) int {
		if a.Offset != b.Offset {
			return int(a.Offset - b.Offset)
		}
		return a.Index - b.Index
	})
	return hits
}

// oneByteReader returns short reads, as pipes and sockets do.
type shortReader struct {
	r io.Reader
	n int
}

func (s *shortReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), s.n)]) }

func TestPlantedValuesEverywhere(t *testing.T) {
	secret := []byte("sk-live-0123456789abcdefXYZ")
	long := randomBytes(7, 3*pageSize+17) // spans pages: longer than a page
	one := []byte{0xA5}
	size := 3*chunkSize + 20*pageSize + 123 // not page aligned: a partial last page
	data := make([]byte, size)              // zeros, as guest RAM mostly is
	copy(data[8*pageSize:], randomBytes(1, 40*pageSize))
	// The first read fills the carry-over and a chunk; later reads a chunk.
	carry := (len(long) - 1 + pageSize - 1) / pageSize * pageSize
	b1 := carry + chunkSize
	b2 := b1 + chunkSize
	offsets := []int{
		0,                    // the very start
		b1 - len(secret)/2,   // across the first chunk boundary
		b2 - len(secret) + 1, // across the second, by one byte
		b2 + pageSize - 5,    // across a page boundary after a carry
		9 * pageSize,         // inside random data
		size - len(secret),   // ends at EOF
		pageSize - 1,         // zero page, then a non-zero page
	}
	for _, off := range offsets {
		copy(data[off:], secret)
	}
	copy(data[b1+3*pageSize:], long)            // after a boundary
	copy(data[b2+8*pageSize:], long[:pageSize]) // only a prefix: no hit
	copy(data[b1+3*pageSize+2*chunkSize/3:], long)
	copy(data[size-len(long)-100:], long)        // near EOF
	copy(data[b2+chunkSize-2*pageSize-7:], long) // across the third boundary
	data[5*pageSize+100] = one[0]                // alone in a zero page
	short := []byte("pw-12345!x")                // too short for an anchor
	holey := append(append([]byte("ab"), make([]byte, 20)...), "cd"...)
	copy(data[b2+4*pageSize-3:], short)
	copy(data[b2+20*pageSize-9:], holey) // its zeros fill one page's end
	copy(data[3*pageSize+1:], short)
	values := [][]byte{secret, long, one, short, holey}
	var fps []Fingerprint
	for _, v := range values {
		fps = append(fps, mustFP(t, v))
	}
	if fps[0].anchor < 0 || fps[1].anchor < 0 || fps[3].anchor >= 0 || fps[4].anchor >= 0 {
		t.Fatalf("anchors: %d %d %d %d", fps[0].anchor, fps[1].anchor, fps[3].anchor, fps[4].anchor)
	}
	want := naive(data, values)
	for _, rd := range []io.Reader{bytes.NewReader(data), &shortReader{bytes.NewReader(data), 10007}} {
		got, err := Scan(rd, fps)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("got %d hits, want %d\ngot  %v\nwant %v", len(got), len(want), got, want)
		}
	}
	// Every planted secret is there (naive agrees with the plan).
	found := map[int64]bool{}
	for _, h := range want {
		if h.Index == 0 {
			found[h.Offset] = true
		}
	}
	for _, off := range offsets {
		if !found[int64(off)] {
			t.Errorf("secret at %d not found", off)
		}
	}
}

func TestWholeStreamIsTheValue(t *testing.T) {
	v := []byte("exactly this")
	hits, err := Scan(bytes.NewReader(v), []Fingerprint{mustFP(t, v)})
	if err != nil || !slices.Equal(hits, []Hit{{0, 0}}) {
		t.Fatalf("%v %v", hits, err)
	}
	hits, err = Scan(bytes.NewReader(v[:5]), []Fingerprint{mustFP(t, v)})
	if err != nil || len(hits) != 0 {
		t.Fatalf("shorter stream: %v %v", hits, err)
	}
	hits, err = Scan(bytes.NewReader(nil), []Fingerprint{mustFP(t, v)})
	if err != nil || len(hits) != 0 {
		t.Fatalf("empty stream: %v %v", hits, err)
	}
}

func TestNoFalseHitsOnRandomData(t *testing.T) {
	data := randomBytes(3, 4<<20)
	var fps []Fingerprint
	for i, n := range []int{4, 8, 14, 15, 16, 32, 64, 4096} {
		fps = append(fps, mustFP(t, randomBytes(uint64(100+i), n)))
	}
	hits, err := Scan(bytes.NewReader(data), fps)
	if err != nil || len(hits) != 0 {
		t.Fatalf("%v %v", hits, err)
	}
}

func TestFingerprintRevealsOnlyLength(t *testing.T) {
	v := []byte("hunter2hunter2")
	f := mustFP(t, v)
	h := fmt.Sprint(f.h)
	j, _ := json.Marshal(map[string]any{"fp": f, "list": []Fingerprint{f}})
	for _, s := range []string{f.String(), fmt.Sprintf("%v %+v %#v %s", f, f, f, f), string(j)} {
		if strings.Contains(s, h) || strings.Contains(s, "hunter") || !strings.Contains(s, "14") {
			t.Errorf("fingerprint shows %q", s)
		}
	}
	if string(j) != `{"fp":{"len":14},"list":[{"len":14}]}` {
		t.Errorf("json %s", j)
	}
}

func TestBadInput(t *testing.T) {
	for _, v := range [][]byte{nil, {}, make([]byte, 100), make([]byte, MaxLen+1)} {
		if _, err := New(v); err == nil {
			t.Errorf("New(%d bytes) accepted", len(v))
		}
	}
	if _, err := Scan(bytes.NewReader([]byte("x")), []Fingerprint{{}}); err == nil {
		t.Error("a zero Fingerprint was accepted")
	}
	if hits, err := Scan(bytes.NewReader([]byte("x")), nil); err != nil || hits != nil {
		t.Errorf("no fingerprints: %v %v", hits, err)
	}
	if _, err := ScanFile(filepath.Join(t.TempDir(), "missing"), []Fingerprint{mustFP(t, []byte("x"))}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}

// benchFile writes a 256 MiB file, random or mostly zero pages, once.
func benchFile(t testing.TB, random bool) string {
	p := filepath.Join(t.TempDir(), "ram")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{9})
	chunk := make([]byte, 1<<20)
	for i := 0; i < 256; i++ {
		clear(chunk)
		if random || i%10 == 0 { // mostly zero: one MiB in ten is data
			r.Read(chunk)
		}
		f.Write(chunk)
	}
	return p
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestThroughput reports MB/s for a 256 MiB file with 5 fingerprints of
// different lengths (set LEAKSCAN_BENCH=1; it takes seconds).
func TestThroughput(t *testing.T) {
	if os.Getenv("LEAKSCAN_BENCH") == "" {
		t.Skip("set LEAKSCAN_BENCH=1 to measure")
	}
	var long, short []Fingerprint
	for i, n := range []int{16, 32, 40, 64, 1000} {
		long = append(long, mustFP(t, randomBytes(uint64(200+i), n)))
	}
	for i, n := range []int{4, 8, 10, 12, 14} { // too short for anchors: prefix tags
		short = append(short, mustFP(t, randomBytes(uint64(300+i), n)))
	}
	for _, random := range []bool{true, false} {
		p := benchFile(t, random)
		if _, err := ScanFile(p, long[:1]); err != nil { // warm the page cache
			t.Fatal(err)
		}
		for _, c := range []struct {
			what string
			fps  []Fingerprint
		}{{"1 anchored", long[:1]}, {"5 anchored", long}, {"1 short", short[:1]}, {"5 short", short}} {
			start, cpu0 := time.Now(), cpuTime()
			hits, err := ScanFile(p, c.fps)
			d, cpu := time.Since(start), cpuTime()-cpu0
			if err != nil || (len(hits) != 0 && c.fps[0].n >= 8) {
				t.Fatalf("%v %v", len(hits), err)
			}
			// CPU time too: this machine is shared, so wall time varies.
			mb, mbCPU := 256*1.048576/d.Seconds(), 256*1.048576/cpu.Seconds()
			t.Logf("random=%v %s: wall %v (%.0f MB/s), CPU %v (%.0f MB/s, %.0f MB/s per length)",
				random, c.what, d.Round(time.Millisecond), mb, cpu.Round(time.Millisecond), mbCPU, mbCPU*float64(len(c.fps)))
		}
	}
}

// Values without an anchor are found by rolling hashes, across chunks too.
func TestShortValuesAcrossChunks(t *testing.T) {
	short, tiny := []byte("pw-12345!x"), []byte("Q7")
	b1 := pageSize + chunkSize // the carry-over is one page
	data := make([]byte, 2*chunkSize+3*pageSize)
	copy(data[b1-4:], short)
	copy(data[b1+chunkSize-1:], tiny)
	copy(data[len(data)-2:], tiny)
	values := [][]byte{short, tiny}
	got, err := Scan(bytes.NewReader(data), []Fingerprint{mustFP(t, short), mustFP(t, tiny)})
	want := naive(data, values)
	if err != nil || !slices.Equal(got, want) || len(want) != 3 {
		t.Fatalf("got %v %v, want %v", got, err, want)
	}
}

// Random layouts agree with the obvious search: values of many lengths
// (with and without anchors) planted anywhere in a stream of zero pages,
// random pages and sparse pages, across chunk boundaries.
func TestRandomLayoutsAgreeWithNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 2; round++ {
		size := 2*chunkSize + r.IntN(3*pageSize) + 5*pageSize
		data := make([]byte, size)
		for p := 0; p < size; p += pageSize {
			switch r.IntN(4) {
			case 0: // random page
				copy(data[p:min(p+pageSize, size)], randomBytes(r.Uint64(), pageSize))
			case 1: // sparse: a few bytes set
				for range 3 {
					if i := p + r.IntN(pageSize); i < size {
						data[i] = byte(r.IntN(256))
					}
				}
			}
		}
		var values [][]byte
		var fps []Fingerprint
		for i := 0; i < 8; i++ {
			n := []int{1, 3, 9, 15, 16, 23, 100, 5000}[i]
			v := randomBytes(r.Uint64(), n)
			if i == 6 { // non-zero bytes only at the edges: no anchor fits
				clear(v[3:97])
			}
			if i == 2 { // a zero prefix: rolled, not tagged
				clear(v[:8])
			}
			values = append(values, v)
			fps = append(fps, mustFP(t, v))
			if (n >= minAnchored && i != 6) != (fps[i].anchor >= 0) || (n < minAnchored && i != 2) != fps[i].hasPrefix {
				t.Fatalf("value %d (%d bytes): anchor %d, prefix %v", i, n, fps[i].anchor, fps[i].hasPrefix)
			}
			for range 3 {
				copy(data[r.IntN(size-n):], v)
			}
		}
		// And some at the chunk boundaries, whatever the carry-over is.
		carry := (5000 - 1 + pageSize - 1) / pageSize * pageSize
		for _, b := range []int{carry + chunkSize, carry + 2*chunkSize} {
			for i, v := range values {
				if b-i*3 >= 0 && b-i*3+len(v) <= size {
					copy(data[b-i*3:], v)
				}
			}
		}
		got, err := Scan(bytes.NewReader(data), fps)
		want := naive(data, values)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("round %d: got %d hits, want %d (%v)", round, len(got), len(want), err)
		}
	}
}
