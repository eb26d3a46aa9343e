package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/internal/fsutil"
)

// DefaultPlatform is the platform pulled when none is given.
const DefaultPlatform = "linux/amd64"

// layerJobs is how many layers are fetched at once.
const layerJobs = 3

// PullOptions tune Pull.
type PullOptions struct {
	// Platform is "os/arch[/variant]"; empty means linux/amd64.
	Platform string
	// Progress, when non-nil, receives one line per layer and a summary.
	Progress io.Writer
	// MaxBytes, when positive, refuses an image whose manifest, config
	// and compressed layers add up to more (ErrTooLarge), before any
	// layer is fetched; a stored one too.
	MaxBytes int64
}

// Pull fetches ref (through a mirror when one is configured for its
// registry), verifies every blob and records it in the store under ref's
// canonical name.
func (s *Store) Pull(ctx context.Context, ref string, opts PullOptions) (*Image, error) {
	r, key, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	platStr := opts.Platform
	if platStr == "" {
		platStr = DefaultPlatform
	}
	plat, err := v1.ParsePlatform(platStr)
	if err != nil {
		return nil, fmt.Errorf("pull %s: invalid platform %q: %v", key, platStr, err)
	}
	rc, err := LoadRegistryConfig(s.home)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", key, err)
	}
	src, err := rc.resolveSource(r)
	if err != nil {
		return nil, err
	}
	p := newProgress(opts.Progress)
	if src.mirror {
		p.printf("Pulling %s from mirror %s\n", key, src.host)
	} else {
		p.printf("Pulling %s from %s\n", key, src.host)
	}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithTransport(&guardTransport{base: remote.DefaultTransport, rc: rc}),
		remote.WithUserAgent("microagent"),
		remote.WithPlatform(*plat),
	}
	desc, err := remote.Get(src.ref, ropts...)
	if err != nil {
		return nil, classify(ctx, err, key, src.host)
	}
	var img v1.Image
	var manifestDigest v1.Hash
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, classify(ctx, err, key, src.host)
		}
		child, err := pickPlatform(idx, *plat, key)
		if err != nil {
			return nil, classify(ctx, err, key, src.host)
		}
		manifestDigest = child.Digest
		if img, err = idx.Image(child.Digest); err != nil {
			return nil, classify(ctx, err, key, src.host)
		}
	} else {
		manifestDigest = desc.Digest
		if img, err = desc.Image(); err != nil {
			return nil, classify(ctx, err, key, src.host)
		}
	}

	unlock, err := lockFile(filepath.Join(s.dir, gcLockFile), unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock()
	e, err := s.writeImage(ctx, img, manifestDigest, *plat, p, fmt.Sprintf("%s from %s", key, src.host), opts.MaxBytes)
	if err != nil {
		return nil, classify(ctx, err, key, src.host)
	}
	e.Source = src.host
	if err := s.record(key, e); err != nil {
		return nil, err
	}
	p.printf("Pulled %s (%s)\n", key, e.Digest)
	return s.image(key, e)
}

// pickPlatform returns the index entry for plat, or an error listing the
// platforms the index offers.
func pickPlatform(idx v1.ImageIndex, plat v1.Platform, key string) (v1.Descriptor, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	var offered []string
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() || d.Platform == nil {
			continue
		}
		if d.Platform.OS == plat.OS && d.Platform.Architecture == plat.Architecture &&
			(plat.Variant == "" || d.Platform.Variant == plat.Variant) {
			return d, nil
		}
		// Attestation manifests are listed as unknown/unknown.
		if d.Platform.OS != "unknown" {
			offered = append(offered, d.Platform.String())
		}
	}
	if len(offered) == 0 {
		offered = []string{"none"}
	}
	return v1.Descriptor{}, kindErr(ErrPlatform, "pull %s: the image has no %s variant (it offers: %s); pass a platform it offers or pick another image",
		key, plat.String(), strings.Join(offered, ", "))
}

// writeImage stores img's layers, config and manifest, each verified, and
// returns the refs.json entry for it (not yet recorded). label names the
// image in errors ("REF from HOST").
func (s *Store) writeImage(ctx context.Context, img v1.Image, wantDigest v1.Hash, plat v1.Platform, p *progress, label string, maxBytes int64) (refEntry, error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return refEntry{}, err
	}
	if got := sha256Of(rawManifest); wantDigest.Hex != "" && got != wantDigest {
		return refEntry{}, kindErr(ErrDigestMismatch, "image %s: manifest digest mismatch: got %s, want %s", label, got, wantDigest)
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return refEntry{}, fmt.Errorf("image %s: manifest: %v", label, err)
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return refEntry{}, err
	}
	if got := sha256Of(rawCfg); got != m.Config.Digest {
		return refEntry{}, kindErr(ErrDigestMismatch, "image %s: config blob digest mismatch: got %s, want %s", label, got, m.Config.Digest)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return refEntry{}, fmt.Errorf("image %s: config: %v", label, err)
	}
	if cf.OS != "" && cf.Architecture != "" && (cf.OS != plat.OS || cf.Architecture != plat.Architecture) {
		return refEntry{}, kindErr(ErrPlatform, "image %s is for %s/%s, not %s", label, cf.OS, cf.Architecture, plat.String())
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return refEntry{}, fmt.Errorf("image %s: manifest has %d layers but the config lists %d diff_ids", label, len(m.Layers), len(cf.RootFS.DiffIDs))
	}

	size := int64(len(rawManifest)) + int64(len(rawCfg))
	if maxBytes > 0 {
		total := size
		for _, ld := range m.Layers {
			if ld.Size < 0 || total+ld.Size < total {
				return refEntry{}, fmt.Errorf("image %s: layer %s has a size of %d", label, ld.Digest, ld.Size)
			}
			total += ld.Size
		}
		if total > maxBytes {
			return refEntry{}, tooLarge(label, total, maxBytes)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(layerJobs)
	for i, ld := range m.Layers {
		size += ld.Size
		diffID := cf.RootFS.DiffIDs[i]
		what := fmt.Sprintf("layer %s (%d/%d) of %s", ld.Digest, i+1, len(m.Layers), label)
		g.Go(func() error {
			if s.hasBlob(ld.Digest, ld.Size) {
				p.layer(ld.Digest, ld.Size, "already stored", 0)
				return nil
			}
			start := time.Now()
			l, err := img.LayerByDigest(ld.Digest)
			if err != nil {
				return err
			}
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			defer rc.Close()
			if err := s.putBlob(gctx, rc, ld.Digest, ld.Size, &diffID, what); err != nil {
				return err
			}
			p.layer(ld.Digest, ld.Size, "done", time.Since(start))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return refEntry{}, err
	}
	if err := s.putBlob(ctx, bytes.NewReader(rawCfg), m.Config.Digest, int64(len(rawCfg)), nil, "config of "+label); err != nil {
		return refEntry{}, err
	}
	mDigest := sha256Of(rawManifest)
	if err := s.putBlob(ctx, bytes.NewReader(rawManifest), mDigest, int64(len(rawManifest)), nil, "manifest of "+label); err != nil {
		return refEntry{}, err
	}
	platform := cf.OS + "/" + cf.Architecture
	if cf.Variant != "" {
		platform += "/" + cf.Variant
	}
	if cf.OS == "" {
		platform = plat.String()
	}
	return refEntry{Digest: mDigest, Config: m.Config.Digest, Size: size, Platform: platform, Stored: time.Now().UTC()}, nil
}

// putBlob copies r into the store as blob want, checking its size (when
// wantSize >= 0) and digest, and, when diffID is given, the digest of its
// uncompressed content (gzip, zstd or plain tar). Nothing is renamed into
// place unless every check passes.
func (s *Store) putBlob(ctx context.Context, r io.Reader, want v1.Hash, wantSize int64, diffID *v1.Hash, what string) error {
	if want.Algorithm != "sha256" {
		return fmt.Errorf("%s: unsupported digest algorithm %q", what, want.Algorithm)
	}
	if s.hasBlob(want, wantSize) {
		return nil
	}
	f, err := os.CreateTemp(s.blobDir(), tmpPrefix+want.Hex[:12]+"-*")
	if err != nil {
		return s.localErr(what, err)
	}
	tmp := f.Name()
	defer func() {
		f.Close()
		os.Remove(tmp) // no-op after the rename
	}()

	h := sha256.New()
	fw := &fileWriter{f: f}
	writers := []io.Writer{fw, h}
	var diffDone chan error
	var diffHash hash.Hash
	var pw *io.PipeWriter
	if diffID != nil {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		diffHash = sha256.New()
		diffDone = make(chan error, 1)
		go func() {
			err := hashUncompressed(pr, diffHash)
			// Unblock the writer side even when decompression stopped early.
			pr.CloseWithError(errDecompressDone)
			diffDone <- err
		}()
		writers = append(writers, &softWriter{w: pw})
	}
	n, copyErr := io.Copy(io.MultiWriter(writers...), fsutil.ContextReader(ctx, r))
	var diffErr error
	if diffID != nil {
		pw.Close()
		diffErr = <-diffDone
	}
	got := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
	if copyErr != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fw.err != nil {
			return s.localErr(what, fw.err)
		}
		// go-containerregistry reports a digest mismatch only as a read
		// error at the end; say it plainly when all bytes arrived.
		if (wantSize < 0 || n == wantSize) && got != want {
			return kindErr(ErrDigestMismatch, "%s: digest mismatch: got %s, want %s (the registry or a proxy served corrupt data; nothing was stored)", what, got, want)
		}
		return fmt.Errorf("%s: %w", what, copyErr)
	}
	if wantSize >= 0 && n != wantSize {
		return kindErr(ErrDigestMismatch, "%s: size mismatch: got %d bytes, want %d (nothing was stored)", what, n, wantSize)
	}
	if got != want {
		return kindErr(ErrDigestMismatch, "%s: digest mismatch: got %s, want %s (the registry or a proxy served corrupt data; nothing was stored)", what, got, want)
	}
	if diffID != nil {
		if diffErr != nil {
			return fmt.Errorf("%s: decompress: %v", what, diffErr)
		}
		gotDiff := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", diffHash.Sum(nil))}
		if gotDiff != *diffID {
			return kindErr(ErrDigestMismatch, "%s: uncompressed digest %s does not match the config's diff_id %s (nothing was stored)", what, gotDiff, *diffID)
		}
	}
	if err := f.Sync(); err != nil {
		return s.localErr(what, err)
	}
	if err := f.Close(); err != nil {
		return s.localErr(what, err)
	}
	if err := os.Rename(tmp, s.blobPath(want)); err != nil {
		return s.localErr(what, err)
	}
	return nil
}

// localErr describes a failure to write the store, with a hint when the
// disk is full.
func (s *Store) localErr(what string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%s: write to the image store: %w (the disk holding %s is full: free space or run \"microagent image prune\")", what, err, s.dir)
	}
	return fmt.Errorf("%s: write to the image store: %w", what, err)
}

// fileWriter remembers a write error, so putBlob can tell a full disk from
// a broken download.
type fileWriter struct {
	f   *os.File
	err error
}

func (w *fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

var errDecompressDone = errors.New("decompression finished")

// hashUncompressed decompresses r (gzip, zstd or plain, told by its magic
// bytes) into h.
func hashUncompressed(r io.Reader, h hash.Hash) error {
	rc, err := decompress(io.NopCloser(r))
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(h, rc)
	return err
}

// decompress returns the uncompressed content of rc (gzip, zstd or plain,
// told by its magic bytes). It uses klauspost/compress, about a third
// faster than the standard library's gzip, which is what go-containerregistry
// uses; closing the result closes rc.
func decompress(rc io.ReadCloser) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(rc, 256<<10)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		rc.Close()
		return nil, err
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			rc.Close()
			return nil, err
		}
		return &readCloser{Reader: zr, close: func() error { zr.Close(); return rc.Close() }}, nil
	case len(magic) == 4 && bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			rc.Close()
			return nil, err
		}
		return &readCloser{Reader: zr, close: func() error { zr.Close(); return rc.Close() }}, nil
	}
	return &readCloser{Reader: br, close: rc.Close}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r *readCloser) Close() error { return r.close() }

// softWriter forwards writes until the first error, then drops them, so a
// failed decompression cannot abort the download (whose own digest check
// then decides what to report).
type softWriter struct {
	w      io.Writer
	failed bool
}

func (s *softWriter) Write(p []byte) (int, error) {
	if !s.failed {
		if _, err := s.w.Write(p); err != nil {
			s.failed = true
		}
	}
	return len(p), nil
}

// guardTransport refuses plain http to hosts that are not allowed it
// (go-containerregistry itself falls back to http for private addresses).
type guardTransport struct {
	base http.RoundTripper
	rc   RegistryConfig
}

func (g *guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.rc.allowHTTP(req.URL.Host) {
		return nil, &insecureError{host: req.URL.Host}
	}
	return g.base.RoundTrip(req)
}

// progress prints pull progress lines; safe for concurrent layers.
type progress struct {
	mu sync.Mutex
	w  io.Writer
}

func newProgress(w io.Writer) *progress { return &progress{w: w} }

func (p *progress) printf(format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format, args...)
}

func (p *progress) layer(d v1.Hash, size int64, state string, took time.Duration) {
	if took > 0 {
		p.printf("  %s  %9s  %s in %.1fs\n", shortDigest(d), humanSize(size), state, took.Seconds())
		return
	}
	p.printf("  %s  %9s  %s\n", shortDigest(d), humanSize(size), state)
}

func shortDigest(d v1.Hash) string {
	if len(d.Hex) > 12 {
		return d.Algorithm + ":" + d.Hex[:12]
	}
	return d.String()
}

// humanSize formats n bytes as "12.3 MB".
func humanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// HumanSize formats a byte count for people ("12.3 MB").
func HumanSize(n int64) string { return humanSize(n) }
