package testenv

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// WriteDockerSave writes img to path as `docker save` (before Docker 25)
// does: manifest.json with RepoTags [tag], the config as <hex>.json and each
// layer uncompressed as <diffid hex>/layer.tar.
func WriteDockerSave(t testing.TB, img v1.Image, tag, path string) {
	t.Helper()
	if err := writeDockerSave(img, tag, path); err != nil {
		t.Fatalf("write docker-save tarball %s: %v", path, err)
	}
}

func writeDockerSave(img v1.Image, tag, path string) error {
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	type manifestEntry struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	m := manifestEntry{Config: cfgName.Hex + ".json", RepoTags: []string{tag}}
	if err := writeTarFile(tw, m.Config, rawCfg); err != nil {
		return err
	}
	for _, l := range layers {
		diffID, err := l.DiffID()
		if err != nil {
			return err
		}
		name := diffID.Hex + "/layer.tar"
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: diffID.Hex + "/", Mode: 0o755, ModTime: fixtureTime}); err != nil {
			return err
		}
		if err := writeTarStream(tw, name, l.Uncompressed); err != nil {
			return err
		}
		m.Layers = append(m.Layers, name)
	}
	mj, err := json.Marshal([]manifestEntry{m})
	if err != nil {
		return err
	}
	if err := writeTarFile(tw, "manifest.json", mj); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// WriteOCILayoutTar writes img to path as a tarred OCI image layout
// (oci-layout, index.json, blobs/), with the index entry annotated
// org.opencontainers.image.ref.name=tag, like `docker buildx --output
// type=oci` or `skopeo copy ... oci-archive:`.
func WriteOCILayoutTar(t testing.TB, img v1.Image, tag, path string) {
	t.Helper()
	dir := t.TempDir()
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag,
	})); err != nil {
		t.Fatalf("write OCI layout: %v", err)
	}
	if err := tarDir(dir, path); err != nil {
		t.Fatalf("tar OCI layout to %s: %v", path, err)
	}
}

// tarDir writes the regular files and folders under dir to a tar at path,
// with names relative to dir.
func tarDir(dir, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: fixtureTime})
		}
		return writeTarStream(tw, rel, func() (io.ReadCloser, error) { return os.Open(p) })
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func writeTarFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: fixtureTime}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// writeTarStream adds a regular file whose content comes from open; the
// content is spooled to a temporary file first because tar needs the size.
func writeTarStream(tw *tar.Writer, name string, open func() (io.ReadCloser, error)) error {
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp("", "testenv-tar-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	n, err := io.Copy(tmp, rc)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: n, ModTime: fixtureTime}); err != nil {
		return err
	}
	_, err = io.Copy(tw, tmp)
	return err
}
