package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/internal/fsutil"
)

// annotationContainerdName carries the full image name in OCI archives
// written by Docker 25+ and containerd (ref.name then holds only the tag).
const annotationContainerdName = "io.containerd.image.name"

// Load imports the images of a `docker save` tarball (every tag in its
// manifest.json) or of a tarred OCI image layout (named by each index
// entry's org.opencontainers.image.ref.name annotation). Gzip-compressed
// archives are accepted too.
func (s *Store) Load(ctx context.Context, archive string) ([]*Image, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", archive, err)
	}
	defer f.Close()
	if err := os.MkdirAll(filepath.Join(s.dir, tmpDir), 0o700); err != nil {
		return nil, fmt.Errorf("load %s: %w", archive, err)
	}
	unlock, err := lockFile(filepath.Join(s.dir, gcLockFile), unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock()

	tarPath := archive
	br := bufio.NewReader(f)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		// Random access into the tar is needed below: unpack it once.
		tmp, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), "load-*.tar")
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", archive, err)
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", archive, err)
		}
		if _, err := io.Copy(tmp, fsutil.ContextReader(ctx, zr)); err != nil {
			return nil, fmt.Errorf("load %s: decompress: %w", archive, err)
		}
		tarPath = tmp.Name()
	}

	names, err := tarNames(tarPath)
	if err != nil {
		return nil, kindErr(ErrBadArchive, "load %s: not a tar archive (%v); give a file made by `docker save` or an OCI layout tarball", archive, err)
	}
	switch {
	case names["oci-layout"] && names["index.json"]:
		return s.loadOCI(ctx, archive, tarPath)
	case names["manifest.json"]:
		return s.loadDockerSave(ctx, archive, tarPath)
	}
	return nil, kindErr(ErrBadArchive, "load %s: neither a docker-save tarball (no manifest.json) nor an OCI layout tarball (no oci-layout); make one with `docker save` or `skopeo copy ... oci-archive:FILE`", archive)
}

// tarNames lists the cleaned member names of a tar file.
func tarNames(p string) (map[string]bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	names := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		names[cleanMember(h.Name)] = true
	}
	if len(names) == 0 {
		return nil, errors.New("empty archive")
	}
	return names, nil
}

func cleanMember(n string) string {
	return strings.TrimPrefix(path.Clean("/"+n), "/")
}

// loadDockerSave imports a `docker save` archive. Its layers are stored
// uncompressed (OCI media type application/vnd.oci.image.layer.v1.tar), so
// nothing is recompressed and each layer's digest is its diff_id.
func (s *Store) loadDockerSave(ctx context.Context, archive, tarPath string) ([]*Image, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(tarPath) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, kindErr(ErrBadArchive, "load %s: manifest.json: %v", archive, err)
	}
	plat, _ := v1.ParsePlatform(DefaultPlatform)
	var out []*Image
	for i, d := range m {
		if len(d.RepoTags) == 0 {
			return out, fmt.Errorf("load %s: image %d (config %s) has no tag; save it by name (docker save NAME:TAG)", archive, i+1, d.Config)
		}
		tag, err := name.NewTag(d.RepoTags[0])
		if err != nil {
			return out, fmt.Errorf("load %s: tag %q: %v", archive, d.RepoTags[0], err)
		}
		label := fmt.Sprintf("%s in %s", d.RepoTags[0], archive)
		img, err := tarball.Image(opener, &tag)
		if err != nil {
			return out, fmt.Errorf("load %s: %v", label, err)
		}
		e, err := s.writeUncompressed(ctx, img, *plat, label)
		if err != nil {
			return out, err
		}
		e.Source = "load:" + filepath.Base(archive)
		for _, rt := range d.RepoTags {
			_, key, err := parseRef(rt)
			if err != nil {
				return out, fmt.Errorf("load %s: %w", archive, err)
			}
			if err := s.record(key, e); err != nil {
				return out, err
			}
			im, err := s.image(key, e)
			if err != nil {
				return out, err
			}
			out = append(out, im)
		}
	}
	return out, nil
}

// writeUncompressed stores img with uncompressed layers under a manifest
// built here, and returns its refs.json entry.
func (s *Store) writeUncompressed(ctx context.Context, img v1.Image, plat v1.Platform, label string) (refEntry, error) {
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return refEntry{}, fmt.Errorf("load %s: config: %v", label, err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return refEntry{}, fmt.Errorf("load %s: config: %v", label, err)
	}
	if cf.OS != "" && cf.Architecture != "" && (cf.OS != plat.OS || cf.Architecture != plat.Architecture) {
		return refEntry{}, kindErr(ErrPlatform, "load %s: the image is for %s/%s, not %s", label, cf.OS, cf.Architecture, plat.String())
	}
	layers, err := img.Layers()
	if err != nil {
		return refEntry{}, fmt.Errorf("load %s: %v", label, err)
	}
	if len(layers) != len(cf.RootFS.DiffIDs) {
		return refEntry{}, fmt.Errorf("load %s: %d layers but the config lists %d diff_ids", label, len(layers), len(cf.RootFS.DiffIDs))
	}
	cfgDigest := sha256Of(rawCfg)
	man := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(rawCfg)), Digest: cfgDigest},
	}
	for i, l := range layers {
		diffID := cf.RootFS.DiffIDs[i]
		rc, err := l.Uncompressed()
		if err != nil {
			return refEntry{}, fmt.Errorf("load %s: layer %d: %v", label, i+1, err)
		}
		what := fmt.Sprintf("layer %s (%d/%d) of %s", diffID, i+1, len(layers), label)
		err = s.putBlob(ctx, rc, diffID, -1, nil, what)
		rc.Close()
		if err != nil {
			return refEntry{}, err
		}
		fi, err := os.Stat(s.blobPath(diffID))
		if err != nil {
			return refEntry{}, err
		}
		man.Layers = append(man.Layers, v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: fi.Size(), Digest: diffID})
	}
	rawMan, err := json.Marshal(man)
	if err != nil {
		return refEntry{}, err
	}
	if err := s.putBlob(ctx, bytes.NewReader(rawCfg), cfgDigest, int64(len(rawCfg)), nil, "config of "+label); err != nil {
		return refEntry{}, err
	}
	mDigest := sha256Of(rawMan)
	if err := s.putBlob(ctx, bytes.NewReader(rawMan), mDigest, int64(len(rawMan)), nil, "manifest of "+label); err != nil {
		return refEntry{}, err
	}
	size := int64(len(rawMan) + len(rawCfg))
	for _, l := range man.Layers {
		size += l.Size
	}
	platform := cf.OS + "/" + cf.Architecture
	if cf.OS == "" {
		platform = plat.String()
	}
	return refEntry{Digest: mDigest, Config: cfgDigest, Size: size, Platform: platform, Stored: time.Now().UTC()}, nil
}

// loadOCI imports a tarred OCI image layout, keeping its digests.
func (s *Store) loadOCI(ctx context.Context, archive, tarPath string) ([]*Image, error) {
	dir, err := os.MkdirTemp(filepath.Join(s.dir, tmpDir), "load-*")
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", archive, err)
	}
	defer os.RemoveAll(dir)
	if err := untarSafe(ctx, tarPath, dir); err != nil {
		return nil, kindErr(ErrBadArchive, "load %s: %v", archive, err)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, kindErr(ErrBadArchive, "load %s: OCI layout: %v", archive, err)
	}
	ii, err := lp.ImageIndex()
	if err != nil {
		return nil, kindErr(ErrBadArchive, "load %s: index.json: %v", archive, err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, kindErr(ErrBadArchive, "load %s: index.json: %v", archive, err)
	}
	plat, _ := v1.ParsePlatform(DefaultPlatform)
	stem := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(archive), ".gz"), ".tar")
	var out []*Image
	for i, d := range im.Manifests {
		ref, err := ociRefName(d.Annotations, stem)
		if err != nil {
			return out, fmt.Errorf("load %s: image %d (%s): %v", archive, i+1, d.Digest, err)
		}
		_, key, err := parseRef(ref)
		if err != nil {
			return out, fmt.Errorf("load %s: %w", archive, err)
		}
		label := fmt.Sprintf("%s in %s", key, archive)
		var img v1.Image
		mDigest := d.Digest
		switch {
		case d.MediaType.IsIndex():
			child, err := ii.ImageIndex(d.Digest)
			if err != nil {
				return out, fmt.Errorf("load %s: %v", label, err)
			}
			cd, err := pickPlatform(child, *plat, key)
			if err != nil {
				return out, err
			}
			mDigest = cd.Digest
			if img, err = child.Image(cd.Digest); err != nil {
				return out, fmt.Errorf("load %s: %v", label, err)
			}
		case d.MediaType.IsImage():
			if img, err = ii.Image(d.Digest); err != nil {
				return out, fmt.Errorf("load %s: %v", label, err)
			}
		default:
			continue // not an image (an artifact, say)
		}
		e, err := s.writeImage(ctx, img, mDigest, *plat, nil, label, 0)
		if err != nil {
			return out, err
		}
		e.Source = "load:" + filepath.Base(archive)
		if err := s.record(key, e); err != nil {
			return out, err
		}
		loaded, err := s.image(key, e)
		if err != nil {
			return out, err
		}
		out = append(out, loaded)
	}
	if len(out) == 0 {
		return nil, kindErr(ErrBadArchive, "load %s: the OCI layout holds no image", archive)
	}
	return out, nil
}

var tagRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// ociRefName names an index entry: the full name from containerd's
// annotation, else ref.name when it is a full reference; a bare tag in
// ref.name ("3.20") becomes localhost/<archive stem>:<tag>.
func ociRefName(ann map[string]string, stem string) (string, error) {
	if n := ann[annotationContainerdName]; n != "" {
		return n, nil
	}
	n := ann[annotationRefName]
	if n == "" {
		return "", fmt.Errorf("no %s annotation, so no name to store it under", annotationRefName)
	}
	if strings.ContainsAny(n, "/:@") {
		return n, nil
	}
	if !tagRe.MatchString(n) {
		return "", fmt.Errorf("%s annotation %q is neither a reference nor a tag", annotationRefName, n)
	}
	repo := strings.Trim(regexp.MustCompile(`[^a-z0-9._-]+`).ReplaceAllString(strings.ToLower(stem), "-"), "-._")
	if repo == "" {
		repo = "image"
	}
	return "localhost/" + repo + ":" + n, nil
}

// untarSafe unpacks the regular files and directories of the tar at src
// into dir, refusing names that leave dir.
func untarSafe(ctx context.Context, src, dir string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if strings.HasPrefix(h.Name, "/") || strings.Contains("/"+h.Name+"/", "/../") {
			return fmt.Errorf("unsafe member name %q", h.Name)
		}
		rel := cleanMember(h.Name)
		if rel == "" {
			continue
		}
		target := filepath.Join(dir, filepath.FromSlash(rel))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, fsutil.ContextReader(ctx, tr))
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}
