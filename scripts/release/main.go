// Command release packages built microagent binaries for a release: a
// tarball (microagent-VERSION-linux-amd64.tar.gz) and a .deb built with nfpm,
// and a SHA256SUMS file for both. It is its own module so that nfpm and its
// dependencies stay out of microagent's go.mod; `make release` builds the
// binaries and runs it.
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
)

// binaries are what a release ships, side by side: the CLI finds the guest
// agent and the network helper beside its own executable.
var binaries = []string{"microagent", "microagent-net", "microagent-agent", "microagent-node"}

// docs are the repository files shipped with them.
var docs = []string{"LICENSE", "README.md", "CHANGELOG.md", "SECURITY.md"}

// debDepends are the host packages microagent runs: QEMU (the microvm
// machine) and mkfs.ext4 for writable disks.
var debDepends = []string{"qemu-system-x86", "e2fsprogs"}

func main() {
	version := flag.String("version", "", "the release version, as `git describe --tags` prints it (v1.2.3, v1.2.3-4-gabcdef, abcdef-dirty)")
	bin := flag.String("bin", "", "folder holding the built binaries")
	root := flag.String("root", ".", "the repository, for LICENSE, README.md, CHANGELOG.md and SECURITY.md")
	out := flag.String("out", "dist", "folder to write the packages into")
	mtime := flag.Int64("mtime", 0, "file time in the packages, Unix seconds (the commit time, so builds are reproducible)")
	flag.Parse()
	if err := run(*version, *bin, *root, *out, time.Unix(*mtime, 0).UTC()); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

var safeVersion = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.+~-]{0,127}$`)

func run(version, bin, root, out string, mtime time.Time) error {
	if !safeVersion.MatchString(version) {
		return fmt.Errorf("-version %q: give what `git describe --tags --always --dirty` prints (letters, digits, . + ~ -)", version)
	}
	if bin == "" {
		return errors.New("-bin: name the folder holding " + strings.Join(binaries, ", ") + " (make release does)")
	}
	for _, b := range binaries {
		if err := checkExecutable(filepath.Join(bin, b)); err != nil {
			return fmt.Errorf("%w: run \"make build\" first", err)
		}
	}
	for _, d := range docs {
		if _, err := os.Stat(filepath.Join(root, d)); err != nil {
			return fmt.Errorf("-root %s: %w", root, err)
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	tgz := filepath.Join(out, "microagent-"+version+"-linux-amd64.tar.gz")
	if err := writeTarball(tgz, "microagent-"+version+"-linux-amd64", bin, root, mtime); err != nil {
		return fmt.Errorf("tarball: %w", err)
	}
	deb, err := writeDeb(out, debVersion(version), bin, root, mtime)
	if err != nil {
		return fmt.Errorf("deb: %w", err)
	}
	var sums strings.Builder
	for _, p := range []string{tgz, deb} {
		sum, err := sha256File(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&sums, "%s  %s\n", sum, filepath.Base(p))
		fmt.Println(p)
	}
	return os.WriteFile(filepath.Join(out, "SHA256SUMS"), []byte(sums.String()), 0o644)
}

// describe splits `git describe` output: the tag's version (v1.2.3), a
// pre-release (-rc1), commits since the tag and the abbreviated hash
// (-4-gabcdef), -dirty.
var describe = regexp.MustCompile(`^v?([0-9]+\.[0-9]+\.[0-9]+)(?:-((?:rc|alpha|beta)[.0-9]*))?(?:-([0-9]+)-g([0-9a-f]+))?(-dirty)?$`)

// debVersion turns `git describe` output into a Debian version that sorts
// as the builds do: v1.2.3 is 1.2.3, a build 4 commits later 1.2.3+4.gabcdef
// (after 1.2.3, before 1.2.4), a pre-release v1.3.0-rc1 1.3.0~rc1 (before
// 1.3.0), and a build before any tag 0.0.0+git.abcdef.
func debVersion(v string) string {
	m := describe.FindStringSubmatch(v)
	if m == nil {
		return "0.0.0+git." + strings.ReplaceAll(v, "-", ".")
	}
	out := m[1]
	if m[2] != "" {
		out += "~" + m[2]
	}
	if m[3] != "" {
		out += "+" + m[3] + ".g" + m[4]
	}
	if m[5] != "" {
		if m[3] == "" {
			out += "+dirty"
		} else {
			out += ".dirty"
		}
	}
	return out
}

// checkExecutable fails unless path is a regular executable file.
func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// writeTarball writes dir/bin/<binaries> and dir/<docs> into a gzipped tar,
// owned by root, with one file time.
func writeTarball(path, dir, bin, root string, mtime time.Time) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	addDir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX})
	}
	addFile := func(name, src string, mode int64) error {
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		fi, err := in.Stat()
		if err != nil {
			return err
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: fi.Size(), ModTime: mtime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = io.Copy(tw, in)
		return err
	}
	if err := addDir(dir); err != nil {
		return err
	}
	if err := addDir(dir + "/bin"); err != nil {
		return err
	}
	for _, b := range binaries {
		if err := addFile(dir+"/bin/"+b, filepath.Join(bin, b), 0o755); err != nil {
			return err
		}
	}
	for _, d := range docs {
		if err := addFile(dir+"/"+d, filepath.Join(root, d), 0o644); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// writeDeb builds the .deb into out and returns its path: the binaries in
// /usr/bin, the docs in /usr/share/doc/microagent.
func writeDeb(out, version, bin, root string, mtime time.Time) (string, error) {
	var contents files.Contents
	for _, b := range binaries {
		contents = append(contents, &files.Content{
			Source: filepath.Join(bin, b), Destination: "/usr/bin/" + b,
			FileInfo: &files.ContentFileInfo{Mode: 0o755, MTime: mtime},
		})
	}
	for _, d := range docs {
		dst := "/usr/share/doc/microagent/" + d
		if d == "LICENSE" {
			dst = "/usr/share/doc/microagent/copyright"
		}
		contents = append(contents, &files.Content{
			Source: filepath.Join(root, d), Destination: dst, Type: files.TypeFile,
			FileInfo: &files.ContentFileInfo{Mode: 0o644, MTime: mtime},
		})
	}
	info := nfpm.WithDefaults(&nfpm.Info{
		Name:          "microagent",
		Arch:          "amd64",
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    "The microagent authors",
		Description: "Run AI-agent workspaces in QEMU microVMs booted from OCI images\n" +
			"microagent boots a microVM per workload or named workspace from an OCI image,\n" +
			"with its own guest agent, a per-VM user-mode network helper, and secrets\n" +
			"given by reference and resolved at each start.",
		License:      "Apache-2.0",
		MTime:        mtime,
		Overridables: nfpm.Overridables{Depends: debDepends, Contents: contents},
	})
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", err
	}
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	path := filepath.Join(out, pkg.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := pkg.Package(info, f); err != nil {
		os.Remove(path)
		return "", err
	}
	return path, f.Close()
}

func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
