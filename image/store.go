// Package image pulls OCI images into a local store, reads their config and
// hands them to the root-disk builder.
//
// The store lives in <state>/images: an OCI image layout (blobs/sha256/...,
// oci-layout, index.json) plus refs.json, which maps each reference to its
// manifest digest. Blobs are written to a temporary file, verified (digest,
// and for layers the uncompressed diff_id) and renamed into place before any
// ref points at them, so a crash or a failed pull never leaves a ref to a
// missing or corrupt blob. refs.json and index.json are rewritten
// atomically under an flock, so concurrent pulls (from several processes)
// never lose each other's entries.
package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/fsutil"
)

// File names inside the store directory.
const (
	refsFile     = "refs.json"
	refsLockFile = "refs.lock"
	gcLockFile   = "gc.lock"
	tmpDir       = "tmp"
	tmpPrefix    = ".tmp-"
)

// annotationRefName is the OCI annotation naming an index entry.
const annotationRefName = "org.opencontainers.image.ref.name"

// PullPolicy says when Get contacts the registry.
type PullPolicy int

const (
	// PullMissing pulls only references that are not in the store; a
	// stored reference is served without any network access.
	PullMissing PullPolicy = iota
	// PullAlways pulls every time (picking up a moved tag).
	PullAlways
	// PullNever never pulls; a missing reference is an error.
	PullNever
)

// ParsePullPolicy parses "missing", "always" or "never".
func ParsePullPolicy(s string) (PullPolicy, error) {
	switch strings.ToLower(s) {
	case "", "missing":
		return PullMissing, nil
	case "always":
		return PullAlways, nil
	case "never":
		return PullNever, nil
	}
	return 0, fmt.Errorf("unknown pull policy %q (use missing, always or never)", s)
}

// String returns the policy's name.
func (p PullPolicy) String() string {
	switch p {
	case PullAlways:
		return "always"
	case PullNever:
		return "never"
	}
	return "missing"
}

// Config is the part of an image's config that decides how its process runs.
type Config struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
}

// Image is an image in the store.
type Image struct {
	// Ref is the canonical reference it is stored under, e.g.
	// "docker.io/library/alpine:3.20" (never the mirror's name).
	Ref string
	// Digest is the manifest digest; root disks are cached by it.
	Digest v1.Hash
	// ConfigDigest is the digest of the config blob (Docker's image ID).
	ConfigDigest v1.Hash
	// Size is the stored size: manifest, config and (compressed) layers.
	Size int64
	// Platform is the image's "os/arch[/variant]".
	Platform string
	// Stored is when the reference was last pulled or loaded.
	Stored time.Time
	// Config is the image's runtime configuration.
	Config Config

	store *Store
}

// refEntry is one record of refs.json.
type refEntry struct {
	Digest   v1.Hash   `json:"digest"`
	Config   v1.Hash   `json:"config"`
	Size     int64     `json:"size"`
	Platform string    `json:"platform,omitempty"`
	Stored   time.Time `json:"stored"`
	// Source is the registry host the image came from (a mirror, say) or
	// "load:<file>" for a loaded archive; for display only.
	Source string `json:"source,omitempty"`
}

type refsDoc struct {
	Version int                 `json:"version"`
	Refs    map[string]refEntry `json:"refs"`
}

// Store is the local image store.
type Store struct {
	dir  string
	home home.Home
}

// OpenStore opens (creating when needed) the store in <state>/images.
func OpenStore(h home.Home) (*Store, error) {
	dir, err := h.Ensure(home.ImagesDir)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, home: h}
	if err := os.MkdirAll(s.blobDir(), 0o700); err != nil {
		return nil, fmt.Errorf("image store %s: %w", dir, err)
	}
	layoutFile := filepath.Join(dir, "oci-layout")
	if _, err := os.Stat(layoutFile); errors.Is(err, fs.ErrNotExist) {
		if err := fsutil.WriteFileAtomic(layoutFile, []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o600); err != nil {
			return nil, fmt.Errorf("image store %s: %w", dir, err)
		}
	}
	return s, nil
}

// Dir is the store's directory (an OCI image layout).
func (s *Store) Dir() string { return s.dir }

func (s *Store) blobDir() string { return filepath.Join(s.dir, "blobs", "sha256") }

// blobPath is the file holding the blob with digest h.
func (s *Store) blobPath(h v1.Hash) string {
	return filepath.Join(s.dir, "blobs", h.Algorithm, h.Hex)
}

func (s *Store) hasBlob(h v1.Hash, size int64) bool {
	fi, err := os.Stat(s.blobPath(h))
	return err == nil && fi.Mode().IsRegular() && (size < 0 || fi.Size() == size)
}

// readRefs reads refs.json; a missing file is an empty store. Readers need
// no lock: writers replace the file by rename.
func (s *Store) readRefs() (refsDoc, error) {
	doc := refsDoc{Version: 1, Refs: map[string]refEntry{}}
	p := filepath.Join(s.dir, refsFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return doc, nil
	}
	if err != nil {
		return doc, fmt.Errorf("image store: %w", err)
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return doc, fmt.Errorf("image store index %s is corrupt: %v (remove it and pull again)", p, err)
	}
	if doc.Refs == nil {
		doc.Refs = map[string]refEntry{}
	}
	return doc, nil
}

// updateRefs runs fn on refs.json under the refs lock and writes the result
// (and the layout's index.json) atomically.
func (s *Store) updateRefs(fn func(doc *refsDoc) error) error {
	unlock, err := lockFile(filepath.Join(s.dir, refsLockFile), unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	doc, err := s.readRefs()
	if err != nil {
		return err
	}
	if err := fn(&doc); err != nil {
		return err
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(s.dir, refsFile), data, 0o600); err != nil {
		return fmt.Errorf("image store: write %s: %w", refsFile, err)
	}
	return s.writeLayoutIndex(doc)
}

// writeLayoutIndex mirrors refs.json into the OCI layout's index.json so
// other OCI tools can read the store.
func (s *Store) writeLayoutIndex(doc refsDoc) error {
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{}}
	keys := make([]string, 0, len(doc.Refs))
	for k := range doc.Refs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		e := doc.Refs[k]
		raw, err := os.ReadFile(s.blobPath(e.Digest))
		if err != nil {
			continue // a damaged entry stays out of index.json; refs.json keeps it
		}
		mt := types.OCIManifestSchema1
		var probe struct {
			MediaType types.MediaType `json:"mediaType"`
		}
		if json.Unmarshal(raw, &probe) == nil && probe.MediaType != "" {
			mt = probe.MediaType
		}
		idx.Manifests = append(idx.Manifests, v1.Descriptor{
			MediaType:   mt,
			Digest:      e.Digest,
			Size:        int64(len(raw)),
			Annotations: map[string]string{annotationRefName: k},
		})
	}
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(s.dir, "index.json"), data, 0o600); err != nil {
		return fmt.Errorf("image store: write index.json: %w", err)
	}
	return nil
}

// record points key at an image whose blobs are all in the store.
func (s *Store) record(key string, e refEntry) error {
	return s.updateRefs(func(doc *refsDoc) error {
		doc.Refs[key] = e
		return nil
	})
}

// lookup finds ref in the store without network access: by its canonical
// key, or for a digest reference by any stored name of the same repository
// at that digest.
func (s *Store) lookup(ref string) (*Image, error) {
	r, key, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	doc, err := s.readRefs()
	if err != nil {
		return nil, err
	}
	if e, ok := find(doc, r, key); ok {
		return s.image(key, e)
	}
	if e, ok := s.unnamed(r); ok {
		return s.image(key, e)
	}
	return nil, nil
}

// unnamed finds a digest reference whose blobs are all in the store
// although no name points at it any more (its tag was pulled anew, or it
// was removed with --force): Prune keeps such images while a workspace or
// snapshot is pinned to them, so their starts need no registry.
func (s *Store) unnamed(r name.Reference) (refEntry, bool) {
	d, ok := r.(name.Digest)
	if !ok {
		return refEntry{}, false
	}
	h, err := v1.NewHash(d.DigestStr())
	if err != nil {
		return refEntry{}, false
	}
	m, err := s.manifestBlob(h)
	if err != nil {
		return refEntry{}, false
	}
	e := refEntry{Digest: h, Config: m.Config.Digest, Size: m.Config.Size}
	for _, l := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		fi, err := os.Stat(s.blobPath(l.Digest))
		if err != nil || fi.Size() != l.Size {
			return refEntry{}, false
		}
		if l.Digest != m.Config.Digest {
			e.Size += l.Size
		}
	}
	if raw, err := os.ReadFile(s.blobPath(m.Config.Digest)); err == nil {
		if cf, err := v1.ParseConfigFile(bytes.NewReader(raw)); err == nil && cf.OS != "" {
			e.Platform = cf.OS + "/" + cf.Architecture
		}
	}
	return e, true
}

// manifestBlob reads and checks the stored manifest blob h.
func (s *Store) manifestBlob(h v1.Hash) (*v1.Manifest, error) {
	raw, err := os.ReadFile(s.blobPath(h))
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(raw); h.Algorithm != "sha256" || hex.EncodeToString(sum[:]) != h.Hex {
		return nil, fmt.Errorf("manifest %s: %w", h, ErrDigestMismatch)
	}
	return v1.ParseManifest(bytes.NewReader(raw))
}

// find is lookup in doc: the entry ref (whose canonical key is key) would
// boot.
func find(doc refsDoc, r name.Reference, key string) (refEntry, bool) {
	if e, ok := doc.Refs[key]; ok {
		return e, true
	}
	if d, ok := r.(interface{ DigestStr() string }); ok {
		repo := strings.TrimSuffix(key, "@"+d.DigestStr())
		for k, e := range doc.Refs {
			if e.Digest.String() == d.DigestStr() && strings.HasPrefix(k, repo) && len(k) > len(repo) && (k[len(repo)] == ':' || k[len(repo)] == '@') {
				return e, true
			}
		}
	}
	return refEntry{}, false
}

// image builds an Image from a refs.json entry, reading its config blob.
func (s *Store) image(key string, e refEntry) (*Image, error) {
	raw, err := os.ReadFile(s.blobPath(e.Config))
	if err != nil {
		return nil, fmt.Errorf("image %s: config blob %s missing from the store (%v); pull it again", key, e.Config, err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("image %s: config blob %s: %v", key, e.Config, err)
	}
	return &Image{
		Ref:          key,
		Digest:       e.Digest,
		ConfigDigest: e.Config,
		Size:         e.Size,
		Platform:     e.Platform,
		Stored:       e.Stored,
		Config:       configOf(cf),
		store:        s,
	}, nil
}

func configOf(cf *v1.ConfigFile) Config {
	return Config{
		Entrypoint: cf.Config.Entrypoint,
		Cmd:        cf.Config.Cmd,
		Env:        cf.Config.Env,
		WorkingDir: cf.Config.WorkingDir,
		User:       cf.Config.User,
	}
}

// Get returns ref from the store, pulling it as policy says. With
// PullMissing a stored reference is returned without any network access.
func (s *Store) Get(ctx context.Context, ref string, policy PullPolicy) (*Image, error) {
	return s.GetWithOptions(ctx, ref, policy, PullOptions{})
}

// GetWithOptions is Get with the options (platform, progress) of the pull
// it may do.
func (s *Store) GetWithOptions(ctx context.Context, ref string, policy PullPolicy, opts PullOptions) (*Image, error) {
	if policy != PullAlways {
		img, err := s.lookup(ref)
		if err != nil {
			return nil, err
		}
		if img != nil && opts.Platform != "" && !samePlatform(img.Platform, opts.Platform) {
			if policy == PullNever {
				return nil, fmt.Errorf("image %s is stored for %s, not %s, and the pull policy is never: %w", img.Ref, img.Platform, opts.Platform, ErrNotStored)
			}
			img = nil // stored for another platform: pull the wanted one
		}
		if img != nil {
			if opts.MaxBytes > 0 && img.Size > opts.MaxBytes {
				return nil, tooLarge(img.Ref, img.Size, opts.MaxBytes)
			}
			return img, nil
		}
		if policy == PullNever {
			_, key, _ := parseRef(ref)
			return nil, fmt.Errorf("image %s is not in the store and the pull policy is never: %w (run \"microagent image pull %s\")", key, ErrNotStored, ref)
		}
	}
	return s.Pull(ctx, ref, opts)
}

// List returns the stored images sorted by reference.
func (s *Store) List() ([]*Image, error) {
	doc, err := s.readRefs()
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(doc.Refs))
	for k := range doc.Refs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*Image, 0, len(keys))
	for _, k := range keys {
		img, err := s.image(k, doc.Refs[k])
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	return out, nil
}

// Remove drops ref from the store (its blobs stay until Prune).
func (s *Store) Remove(ref string) error {
	return s.RemovePinned([]string{ref}, nil)
}

// Pin is a stored image something needs: Ref, a digest reference
// (repository@sha256:...), is what it boots; By names who, for messages
// ("workspace app", "snapshot app:base").
type Pin struct {
	Ref string
	By  []string
}

// RemovePinned drops refs from the store, all or none: an unknown one
// fails with ErrNotStored, and one whose removal leaves a pin without its
// image (no other stored name of the repository at the digest) fails with
// ErrInUse naming who needs it.
func (s *Store) RemovePinned(refs []string, pins []Pin) error {
	keys := make([]string, 0, len(refs))
	for _, ref := range refs {
		_, key, err := parseRef(ref)
		if err != nil {
			return err
		}
		keys = append(keys, key)
	}
	return s.updateRefs(func(doc *refsDoc) error {
		after := refsDoc{Refs: maps.Clone(doc.Refs)}
		for _, key := range keys {
			if _, ok := doc.Refs[key]; !ok {
				return fmt.Errorf("remove image %s: %w", key, ErrNotStored)
			}
			delete(after.Refs, key)
		}
		var by []string
		for _, p := range pins {
			pr, pkey, err := parseRef(p.Ref)
			if err != nil {
				continue
			}
			if _, had := find(*doc, pr, pkey); had {
				if _, has := find(after, pr, pkey); !has {
					by = append(by, p.By...)
				}
			}
		}
		if len(by) > 0 {
			return fmt.Errorf("image %s: %s %s pinned to it: %w (removing it would make the next start need a registry, and lose a loaded image); delete %s first, or pass --force",
				strings.Join(keys, ", "), strings.Join(by, ", "), pluralIsAre(len(by)), ErrInUse, itThem(len(by)))
		}
		doc.Refs = after.Refs
		return nil
	})
}

func itThem(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}

func pluralIsAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

// Prune deletes every blob that no stored reference uses, and leftovers of
// interrupted pulls, and returns the bytes freed. It waits for pulls and
// loads in progress (they hold the store's gc lock shared).
func (s *Store) Prune() (int64, error) {
	freed, _, err := s.PruneKeeping(nil)
	return freed, err
}

// PruneKeeping is Prune that also keeps the blobs of every pin (a digest
// reference a workspace or snapshot boots) that no stored name points at
// any more; kept lists those pins.
func (s *Store) PruneKeeping(pins []Pin) (freed int64, kept []Pin, err error) {
	unlock, err := lockFile(filepath.Join(s.dir, gcLockFile), unix.LOCK_EX)
	if err != nil {
		return 0, nil, err
	}
	defer unlock()
	doc, err := s.readRefs()
	if err != nil {
		return 0, nil, err
	}
	keep := map[string]bool{}
	for k, e := range doc.Refs {
		keep[e.Digest.Hex] = true
		keep[e.Config.Hex] = true
		raw, err := os.ReadFile(s.blobPath(e.Digest))
		if err != nil {
			return 0, nil, fmt.Errorf("prune: manifest of %s: %w", k, err)
		}
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return 0, nil, fmt.Errorf("prune: manifest of %s: %w", k, err)
		}
		for _, l := range m.Layers {
			keep[l.Digest.Hex] = true
		}
	}
	for _, p := range pins {
		r, key, err := parseRef(p.Ref)
		if err != nil {
			continue
		}
		d, ok := r.(name.Digest)
		if _, named := find(doc, r, key); named || !ok {
			continue
		}
		h, err := v1.NewHash(d.DigestStr())
		if err != nil {
			continue
		}
		m, err := s.manifestBlob(h)
		if err != nil {
			continue // not here any more: nothing to keep
		}
		keep[h.Hex], keep[m.Config.Digest.Hex] = true, true
		for _, l := range m.Layers {
			keep[l.Digest.Hex] = true
		}
		kept = append(kept, Pin{Ref: key, By: p.By})
	}
	entries, err := os.ReadDir(s.blobDir())
	if err != nil {
		return 0, kept, fmt.Errorf("prune: %w", err)
	}
	for _, de := range entries {
		if keep[de.Name()] {
			continue
		}
		p := filepath.Join(s.blobDir(), de.Name())
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return freed, kept, fmt.Errorf("prune: %w", err)
		}
		freed += fi.Size()
	}
	if err := os.RemoveAll(filepath.Join(s.dir, tmpDir)); err != nil {
		return freed, kept, fmt.Errorf("prune: %w", err)
	}
	return freed, kept, nil
}

// Open returns the image as a go-containerregistry v1.Image backed by the
// store's files (for flattening into a root disk).
func (img *Image) Open() (v1.Image, error) {
	if img.store == nil {
		return nil, fmt.Errorf("image %s: not from a store", img.Ref)
	}
	raw, err := os.ReadFile(img.store.blobPath(img.Digest))
	if err != nil {
		return nil, fmt.Errorf("image %s: manifest %s missing from the store (%v); pull it again", img.Ref, img.Digest, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("image %s: manifest %s: %v", img.Ref, img.Digest, err)
	}
	mt := m.MediaType
	if mt == "" {
		mt = types.OCIManifestSchema1
	}
	v, err := partial.CompressedToImage(&storeImage{s: img.store, raw: raw, m: m, mt: mt})
	if err != nil {
		return nil, err
	}
	return fastImage{v}, nil
}

// fastImage gives its layers a faster decompressor (see decompress); that
// is most of the time spent building a root disk.
type fastImage struct{ v1.Image }

func (f fastImage) Layers() ([]v1.Layer, error) {
	ls, err := f.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = fastLayer{l}
	}
	return out, nil
}

type fastLayer struct{ v1.Layer }

func (l fastLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	return decompress(rc)
}

// storeImage is a v1.Image core over the store's blob files.
type storeImage struct {
	s   *Store
	raw []byte
	m   *v1.Manifest
	mt  types.MediaType
}

func (si *storeImage) MediaType() (types.MediaType, error) { return si.mt, nil }
func (si *storeImage) RawManifest() ([]byte, error)        { return si.raw, nil }
func (si *storeImage) RawConfigFile() ([]byte, error) {
	return os.ReadFile(si.s.blobPath(si.m.Config.Digest))
}
func (si *storeImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == si.m.Config.Digest {
		return &storeBlob{s: si.s, desc: si.m.Config}, nil
	}
	for _, d := range si.m.Layers {
		if d.Digest == h {
			return &storeBlob{s: si.s, desc: d}, nil
		}
	}
	return nil, fmt.Errorf("blob %s is not part of image %s", h, si.m.Config.Digest)
}

type storeBlob struct {
	s    *Store
	desc v1.Descriptor
}

func (b *storeBlob) Digest() (v1.Hash, error)            { return b.desc.Digest, nil }
func (b *storeBlob) Size() (int64, error)                { return b.desc.Size, nil }
func (b *storeBlob) MediaType() (types.MediaType, error) { return b.desc.MediaType, nil }
func (b *storeBlob) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(b.s.blobPath(b.desc.Digest))
	if err != nil {
		return nil, fmt.Errorf("layer %s missing from the image store (%v); pull the image again", b.desc.Digest, err)
	}
	return f, nil
}

// lockFile takes an flock (LOCK_SH or LOCK_EX) on path, creating it.
func lockFile(path string, how int) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// sha256Of returns the digest of data.
func sha256Of(data []byte) v1.Hash {
	sum := sha256.Sum256(data)
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum[:])}
}

// samePlatform compares "os/arch[/variant]" strings, ignoring a variant
// that only one side gives.
func samePlatform(a, b string) bool {
	pa, errA := v1.ParsePlatform(a)
	pb, errB := v1.ParsePlatform(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return pa.OS == pb.OS && pa.Architecture == pb.Architecture &&
		(pa.Variant == "" || pb.Variant == "" || pa.Variant == pb.Variant)
}
