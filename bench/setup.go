package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/initramfs"
	"github.com/microagent-dev/microagent/internal/agentbuild"
	"github.com/microagent-dev/microagent/internal/imagebuild"
	"github.com/microagent-dev/microagent/kernel"
)

// moduleRoot is the repository's root (the folder of go.mod), where the
// guest programs are built from.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w (is Go installed?)", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the microagent module: run the benchmark from the repository (make bench)")
	}
	return filepath.Dir(gomod), nil
}

// buildStatic builds a static linux/amd64 guest program.
func buildStatic(ctx context.Context, root, pkg, out string) error {
	return agentbuild.Build(ctx, root, pkg, out)
}

// imageWith builds the static guest program pkg, puts it at guestPath in
// one more layer on top of the busybox image and pushes that as repo (its
// own repository, so the other sections' image stays as it was). It
// returns the image's reference.
func (e *env) imageWith(ctx context.Context, what, pkg, guestPath, repo string) (string, error) {
	p := filepath.Join(e.tmp, path.Base(pkg))
	logf("building %s", what)
	if err := buildStatic(ctx, e.root, pkg, p); err != nil {
		return "", err
	}
	bin, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	base, err := imagebuild.BaseEntries()
	if err != nil {
		return "", err
	}
	layer := []imagebuild.Entry{imagebuild.File(strings.TrimPrefix(guestPath, "/"), string(bin), 0o755, 0, 0)}
	img, err := imagebuild.Build(v1.Config{Env: []string{imagebuild.DefaultPath}, Cmd: []string{"/bin/sh"}}, base, layer)
	if err != nil {
		return "", fmt.Errorf("%s image: %w", repo, err)
	}
	return e.reg.push(ctx, repo, img)
}

// agentBinary returns $MICROAGENT_AGENT, or builds the agent into dir.
func agentBinary(ctx context.Context, root, dir string) (string, error) {
	if p := os.Getenv(guestboot.AgentEnvVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("guest agent %s (from %s): %w", p, guestboot.AgentEnvVar, err)
		}
		return filepath.Abs(p)
	}
	p := filepath.Join(dir, "microagent-agent")
	logf("building the guest agent (set %s to reuse one)", guestboot.AgentEnvVar)
	return p, buildStatic(ctx, root, "./cmd/microagent-agent", p)
}

// installKernel installs the default kernel into h, from the .deb cache
// when cacheDir is set (else through EnsureDefault, i.e. apt-get download).
func installKernel(ctx context.Context, h home.Home, cacheDir string) (*kernel.Kernel, error) {
	progress := &prefixWriter{prefix: "bench: "}
	if cacheDir != "" {
		if err := os.MkdirAll(cacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("kernel cache %s: %w", cacheDir, err)
		}
		return kernel.Install(ctx, h, kernel.InstallOptions{CacheDir: cacheDir, Stderr: progress})
	}
	return kernel.EnsureDefault(ctx, h, progress)
}

// freshHome returns a new state directory under parent sharing src's
// installed kernels: big files are hard-linked, the small records copied
// (so that a record rewritten in one home never changes another).
func freshHome(src home.Home, parent string) (home.Home, error) {
	dir, err := os.MkdirTemp(parent, "home-")
	if err != nil {
		return home.Home{}, err
	}
	h := home.Home{Root: dir}
	from := src.Path(home.KernelsDir)
	to := h.Path(home.KernelsDir)
	err = filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		target := filepath.Join(to, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o700)
		case !d.Type().IsRegular():
			return nil // lock files and the like
		case strings.HasSuffix(p, ".json"):
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o600)
		default:
			return os.Link(p, target)
		}
	})
	if err != nil {
		return home.Home{}, fmt.Errorf("share the kernel with %s: %w", dir, err)
	}
	return h, nil
}

// writeInitramfs writes the floor VMs' initramfs: the same layout and
// modules as the agent's (initramfs.Build), with guestinit as /init.
func writeInitramfs(initBin string, k *kernel.Kernel, dst string) error {
	var buf bytes.Buffer
	if err := initramfs.Build(&buf, initBin, k); err != nil {
		return err
	}
	return os.WriteFile(dst, buf.Bytes(), 0o600)
}

// localRegistry is an in-process OCI registry on 127.0.0.1 (plain http,
// which the image store allows for loopback addresses).
type localRegistry struct {
	srv  *httptest.Server
	host string
}

func startRegistry() *localRegistry {
	// A nil logger makes the registry panic on its first request.
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	return &localRegistry{srv: srv, host: strings.TrimPrefix(srv.URL, "http://")}
}

func (r *localRegistry) Close() { r.srv.Close() }

// push stores img as repo:latest and returns the full reference.
func (r *localRegistry) push(ctx context.Context, repo string, img v1.Image) (string, error) {
	ref := r.host + "/" + repo + ":latest"
	tag, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return ref, nil
}

// fileLayer is an uncompressed layer read from a tar file. Its digest is
// its diff ID, so nothing is gzipped (the rootfs benchmark must time the
// ext4 build, not compression).
type fileLayer struct {
	path   string
	digest v1.Hash
	size   int64
}

func newFileLayer(p string) (*fileLayer, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("hash %s: %w", p, err)
	}
	return &fileLayer{path: p, size: n, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}, nil
}

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return os.Open(l.path) }
func (l *fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return types.OCIUncompressedLayer, nil }

// maxTarFile skips the few huge files (JDK modules, compilers) of a system
// folder, so the layer looks like an image's: many files of ordinary size.
const maxTarFile = 16 << 20

// writeTreeTar writes a tar of the folders, symlinks and readable regular
// files of at most maxTarFile bytes under src (in lexical order) to dst,
// stopping once limit bytes of file content are in; it returns the tar's
// size and the file count.
func writeTreeTar(src, dst string, limit int64) (size int64, files int, err error) {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, 0, err
	}
	defer out.Close()
	tw := tar.NewWriter(out)
	var content int64
	errStop := errors.New("limit reached")
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable folders are skipped
		}
		if content >= limit {
			return errStop
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		link := ""
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return nil
			}
		case fi.Mode().IsRegular() && fi.Size() > maxTarFile:
			return nil
		case fi.IsDir(), fi.Mode().IsRegular():
		default:
			return nil // sockets, devices, fifos
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return nil
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		if !fi.Mode().IsRegular() {
			return tw.WriteHeader(h)
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		n, err := io.Copy(tw, f)
		if err != nil {
			return fmt.Errorf("%s: %w (changed while being read?)", p, err)
		}
		content += n
		files++
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return 0, 0, fmt.Errorf("tar %s: %w", src, err)
	}
	if err := tw.Close(); err != nil {
		return 0, 0, err
	}
	if err := out.Close(); err != nil {
		return 0, 0, err
	}
	fi, err := os.Stat(dst)
	if err != nil {
		return 0, 0, err
	}
	return fi.Size(), files, nil
}

// prefixWriter prefixes each write (a progress line) for stderr.
type prefixWriter struct{ prefix string }

func (w *prefixWriter) Write(p []byte) (int, error) {
	fmt.Fprint(os.Stderr, w.prefix+string(p))
	return len(p), nil
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
}
