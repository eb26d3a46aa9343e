package kernel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/fsutil"
)

// Errors Install wraps, for callers that want to tell them apart.
var (
	// ErrHashMismatch: a .deb is not the file the pin names.
	ErrHashMismatch = errors.New("kernel package hash mismatch")
	// ErrNotInArchive: apt cannot find the pinned package version.
	ErrNotInArchive = errors.New("kernel package not in the apt archive")
	// ErrNoApt: apt-get is not available on this host.
	ErrNoApt = errors.New("apt-get not found")
)

// InstallOptions tune Install.
type InstallOptions struct {
	// Name is the install name; "default" when empty.
	Name string
	// Deb is a local kernel .deb to use instead of downloading the pinned
	// one. If it claims to be the pinned package and version, its hash must
	// match the pin; another version is accepted and recorded with its own
	// version and hash.
	Deb string
	// ModulesDebs are local packages unpacked over Deb's files, for
	// distributions that ship a kernel's modules apart from its image
	// (Ubuntu's linux-modules-RELEASE beside linux-image-RELEASE). They
	// need Deb.
	ModulesDebs []string
	// Force reinstalls even when a kernel of this name is installed.
	Force bool
	// CacheDir, when set, keeps verified downloads as <CacheDir>/<sha256>.deb
	// and reuses them (after re-checking the hash) instead of downloading.
	CacheDir string
	// Stderr receives progress lines; nil discards them.
	Stderr io.Writer
}

// Install installs a guest kernel under <state>/kernels/<Name>/ and returns
// it. It builds the new folder beside the old one and swaps it in with one
// rename, so an interrupted install (error, Ctrl-C, crash) leaves the
// previous state untouched; leftovers of a killed install are removed by the
// next one. Concurrent installs of the same name wait for each other.
func Install(ctx context.Context, h home.Home, opts InstallOptions) (*Kernel, error) {
	name := opts.Name
	if name == "" {
		name = DefaultName
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	logw := opts.Stderr
	if logw == nil {
		logw = io.Discard
	}
	progress := func(format string, args ...any) { fmt.Fprintf(logw, "kernel: "+format+"\n", args...) }
	start := time.Now()

	kdir, err := h.Ensure(home.KernelsDir)
	if err != nil {
		return nil, err
	}
	unlock, err := lockName(ctx, kdir, name, progress)
	if err != nil {
		return nil, err
	}
	defer unlock()

	if !opts.Force {
		k, err := Load(h, name)
		if err == nil {
			progress("%s is already installed (use --force to reinstall)", k)
			return k, nil
		}
		if !errors.Is(err, ErrNotInstalled) {
			return nil, err
		}
	}
	removeStale(kdir, name)
	tmp, err := os.MkdirTemp(kdir, ".install-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("install kernel %q: %w", name, err)
	}
	defer os.RemoveAll(tmp)

	if len(opts.ModulesDebs) > 0 && opts.Deb == "" {
		return nil, errors.New("a modules package goes with the kernel package it belongs to: give --deb too")
	}
	deb, err := obtainDeb(ctx, tmp, opts, progress)
	if err != nil {
		return nil, err
	}
	progress("extracting %s", filepath.Base(deb.path))
	root := filepath.Join(tmp, "root")
	if err := run(ctx, "", "dpkg-deb", "-x", deb.path, root); err != nil {
		return nil, fmt.Errorf("extract %s: %w", deb.path, err)
	}
	for _, p := range opts.ModulesDebs {
		md, err := localDeb(ctx, p)
		if err != nil {
			return nil, err
		}
		progress("extracting %s", filepath.Base(md.path))
		if err := run(ctx, "", "dpkg-deb", "-x", md.path, root); err != nil {
			return nil, fmt.Errorf("extract %s: %w", md.path, err)
		}
		deb.source += " + deb:" + md.path
	}
	stage := filepath.Join(tmp, "kernel")
	if err := os.Mkdir(stage, 0o700); err != nil {
		return nil, fmt.Errorf("install kernel %q: %w", name, err)
	}
	k, err := buildFromTree(ctx, root, stage)
	if err != nil {
		return nil, fmt.Errorf("kernel package %s: %w", deb.path, err)
	}
	_ = os.RemoveAll(root) // free ~100 MB before the swap
	k.Name = name
	k.Package = deb.pkg
	k.Version = deb.version
	k.Source = deb.source
	k.DebSHA256 = deb.sha256
	k.InstalledAt = time.Now().UTC()
	if err := k.save(stage); err != nil {
		return nil, fmt.Errorf("install kernel %q: %w", name, err)
	}
	if err := syncDir(stage); err != nil {
		return nil, fmt.Errorf("install kernel %q: %w", name, err)
	}
	target := filepath.Join(kdir, name)
	if err := swapInto(stage, target, filepath.Join(tmp, "old")); err != nil {
		return nil, fmt.Errorf("install kernel %q into %s: %w", name, target, err)
	}
	if err := syncDir(kdir); err != nil {
		return nil, fmt.Errorf("install kernel %q: %w", name, err)
	}
	installed, err := Load(h, name)
	if err != nil {
		return nil, err
	}
	progress("installed %s in %s (%d modules)", installed, time.Since(start).Round(10*time.Millisecond), len(installed.Modules))
	return installed, nil
}

// lockName serialises installs of one name across processes with flock on
// kernels/.lock-<name>. It polls so that ctx (Ctrl-C) can end the wait.
func lockName(ctx context.Context, kdir, name string, progress func(string, ...any)) (func(), error) {
	path := filepath.Join(kdir, ".lock-"+name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock kernel %q: %w", name, err)
	}
	told := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock kernel %q (%s): %w", name, path, err)
		}
		if !told {
			progress("waiting for another install of %q to finish", name)
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock kernel %q: %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// removeStale deletes temp folders left by installs of name that were killed
// (the caller holds the name's lock, so none of them is live).
func removeStale(kdir, name string) {
	old, _ := filepath.Glob(filepath.Join(kdir, ".install-"+name+"-*"))
	for _, p := range old {
		_ = os.RemoveAll(p)
	}
}

// swapInto moves the finished folder stage to target in one step. When
// target exists the two are exchanged atomically (renameat2 RENAME_EXCHANGE)
// and the old one ends up at stage, to be removed with the temp folder.
// Filesystems without RENAME_EXCHANGE fall back to two renames (old moved to
// oldPath first), leaving a short window with no kernel but never a mixed one.
func swapInto(stage, target, oldPath string) error {
	if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
		return os.Rename(stage, target)
	}
	err := unix.Renameat2(unix.AT_FDCWD, stage, unix.AT_FDCWD, target, unix.RENAME_EXCHANGE)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	if err := os.Rename(target, oldPath); err != nil {
		return err
	}
	if err := os.Rename(stage, target); err != nil {
		_ = os.Rename(oldPath, target) // put the old one back
		return err
	}
	return nil
}

// debFile is a kernel package checked and ready to extract.
type debFile struct {
	path, sha256, pkg, version, source string
}

// obtainDeb returns the .deb to install: the user's, a cached download or a
// fresh `apt-get download`, its hash checked.
func obtainDeb(ctx context.Context, tmp string, opts InstallOptions, progress func(string, ...any)) (*debFile, error) {
	if opts.Deb != "" {
		return localDeb(ctx, opts.Deb)
	}
	d := &debFile{
		sha256:  DefaultDebSHA256,
		pkg:     DefaultPackage,
		version: DefaultVersion,
		source:  "apt:" + DefaultPackage + "=" + DefaultVersion,
	}
	var cached string
	if opts.CacheDir != "" {
		cached = filepath.Join(opts.CacheDir, DefaultDebSHA256+".deb")
		if sum, err := fsutil.SHA256File(cached); err == nil {
			if sum == DefaultDebSHA256 {
				progress("using cached %s", cached)
				d.path = cached
				return d, nil
			}
			_ = os.Remove(cached) // damaged: fetch again
		}
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return nil, fmt.Errorf("%w: this host does not look like Debian or Ubuntu, so the pinned kernel (%s %s) cannot be downloaded: "+
			"fetch %s_%s_amd64.deb yourself and run \"microagent kernel install --deb FILE\", or boot your own kernel with --kernel PATH",
			ErrNoApt, DefaultPackage, DefaultVersion, DefaultPackage, DefaultVersion)
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		return nil, fmt.Errorf("dpkg-deb not found: install dpkg, or boot your own kernel with --kernel PATH")
	}
	dl := filepath.Join(tmp, "download")
	if err := os.Mkdir(dl, 0o700); err != nil {
		return nil, err
	}
	progress("downloading %s %s with apt-get", DefaultPackage, DefaultVersion)
	path, err := aptDownload(ctx, dl, DefaultPackage, DefaultVersion)
	if err != nil {
		return nil, err
	}
	sum, err := fsutil.SHA256File(path)
	if err != nil {
		return nil, fmt.Errorf("read downloaded %s: %w", path, err)
	}
	if sum != DefaultDebSHA256 {
		return nil, fmt.Errorf("%w: apt-get downloaded %s with SHA-256 %s, but microagent pins %s for %s %s; not installing it "+
			"(check your apt sources; to use another kernel on purpose, pass it with --deb or --kernel)",
			ErrHashMismatch, filepath.Base(path), sum, DefaultDebSHA256, DefaultPackage, DefaultVersion)
	}
	d.path = path
	if cached != "" {
		if err := cacheCopy(path, cached); err != nil {
			progress("could not keep the download in %s: %v", opts.CacheDir, err)
		}
	}
	return d, nil
}

// localDeb checks a user-supplied .deb: the pinned package and version must
// match the pinned hash; anything else is taken as the user's choice.
func localDeb(ctx context.Context, path string) (*debFile, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("kernel package %q: %w", path, err)
	}
	sum, err := fsutil.SHA256File(abs)
	if err != nil {
		return nil, fmt.Errorf("kernel package: %w", err)
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		return nil, fmt.Errorf("dpkg-deb not found: install dpkg to unpack %s, or boot your own kernel with --kernel PATH", abs)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "dpkg-deb", "-f", abs, "Package", "Version")
	cmd.Stdout = &out
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("kernel package %s is not a readable .deb: %v: %s", abs, err, lastLines(errb.String(), 3))
	}
	fields := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	d := &debFile{path: abs, sha256: sum, pkg: fields["Package"], version: fields["Version"], source: "deb:" + abs}
	if d.pkg == "" || d.version == "" {
		return nil, fmt.Errorf("kernel package %s has no Package or Version in its control file", abs)
	}
	if d.pkg == DefaultPackage && d.version == DefaultVersion && sum != DefaultDebSHA256 {
		return nil, fmt.Errorf("%w: %s claims to be %s %s but has SHA-256 %s, not the pinned %s; it was altered or is damaged: "+
			"download it again", ErrHashMismatch, abs, d.pkg, d.version, sum, DefaultDebSHA256)
	}
	return d, nil
}

// aptDownload runs `apt-get download pkg=version` in dir and returns the
// path of the .deb it fetched.
func aptDownload(ctx context.Context, dir, pkg, version string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "apt-get", "download", pkg+"="+version)
	cmd.Dir = dir
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("download %s %s: %w", pkg, version, ctx.Err())
		}
		return "", aptError(pkg, version, out.String(), err)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("download %s %s: apt-get left %d .deb files in %s, expected one: %s",
			pkg, version, len(debs), dir, lastLines(out.String(), 3))
	}
	return debs[0], nil
}

// aptError explains a failed apt-get download.
func aptError(pkg, version, output string, err error) error {
	msg := lastLines(output, 3)
	switch {
	case strings.Contains(output, "was not found"), strings.Contains(output, "Can't select"):
		return fmt.Errorf("%w: %s version %s is no longer in the apt archive (apt-get: %s); "+
			"find %s_%s_amd64.deb (e.g. on snapshot.debian.org) and run \"microagent kernel install --deb FILE\", "+
			"or boot your own kernel with --kernel PATH", ErrNotInArchive, pkg, version, msg, pkg, version)
	case strings.Contains(output, "Unable to locate package"):
		return fmt.Errorf("%w: apt does not know %s (apt-get: %s); run \"apt-get update\" if this host's package lists are empty, "+
			"or find %s_%s_amd64.deb (e.g. on snapshot.debian.org) and run \"microagent kernel install --deb FILE\"",
			ErrNotInArchive, pkg, msg, pkg, version)
	}
	return fmt.Errorf("apt-get download %s=%s failed (%v): %s; check the network and apt sources, or pass a .deb with --deb",
		pkg, version, err, msg)
}

// lastLines returns the last n non-empty lines of s, joined by "; ".
func lastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// cacheCopy stores src as dst atomically (hard link when possible).
func cacheCopy(src, dst string) error {
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.tmp-%d", dst, os.Getpid())
	_ = os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		if err := copyFile(src, tmp); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// copyFile copies src to a new file dst (0600), synced.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return out.Close()
}

// run runs a command, returning its last output lines on failure.
func run(ctx context.Context, dir, name string, args ...string) error {
	if _, err := exec.LookPath(name); err != nil {
		return fmt.Errorf("%s not found: install it, or boot your own kernel with --kernel PATH", name)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s: %v: %s", name, err, lastLines(out.String(), 3))
	}
	return nil
}

// buildFromTree fills stage from an extracted kernel package: the vmlinux
// and the guest's modules, in load order.
func buildFromTree(ctx context.Context, root, stage string) (*Kernel, error) {
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return nil, fmt.Errorf("expected one boot/vmlinuz-* in the package, found %d: is it a linux-image package?", len(images))
	}
	release := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	vmlinux := filepath.Join(stage, "vmlinux")
	sum, err := extractVmlinux(ctx, images[0], vmlinux)
	if err != nil {
		return nil, err
	}
	k := &Kernel{Release: release, Dir: stage, Vmlinux: vmlinux, VmlinuxSHA256: sum}

	modroot := ""
	for _, cand := range []string{"lib/modules", "usr/lib/modules"} { // merged-/usr packages use the latter
		p := filepath.Join(root, cand, release)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			modroot = p
			break
		}
	}
	if modroot == "" {
		return nil, fmt.Errorf("no lib/modules/%s in the package", release)
	}
	ms, err := scanModules(modroot)
	if err != nil {
		return nil, err
	}
	order, err := ms.resolve(GuestModules)
	if err != nil {
		return nil, err
	}
	if len(order) > 0 {
		if err := os.Mkdir(filepath.Join(stage, "modules"), 0o700); err != nil {
			return nil, err
		}
	}
	for _, m := range order { // written decompressed: the guest loads plain .ko files
		rel := filepath.Join("modules", m.name+".ko")
		if err := writeFileSync(filepath.Join(stage, rel), m.data); err != nil {
			return nil, err
		}
		sum := sha256.Sum256(m.data)
		k.Modules = append(k.Modules, Module{Name: m.name, File: rel, SHA256: hex.EncodeToString(sum[:])})
	}
	return k, nil
}
