package workspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/internal/fsutil"
	"github.com/microagent-dev/microagent/rootfs"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/tarcopy"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"
)

// CreateOptions say what workspace to create.
type CreateOptions struct {
	// Name is the workspace's name (see ValidateName).
	Name string
	// Image is the OCI image reference; it is pulled (per Pull) and the
	// workspace is pinned to its digest.
	Image string
	Pull  image.PullPolicy
	// MaxImageBytes, when positive, refuses an image larger than that
	// (image.ErrTooLarge) before its layers are fetched.
	MaxImageBytes int64
	// Profile names a profile (guestboot.Profiles: tiny, small, medium,
	// large; empty for guestboot.DefaultProfile). Non-zero Resources fields
	// override it.
	Profile   string
	Resources Resources
	// KernelPath boots the user's own kernel instead of the default.
	KernelPath string
	// Agent is the guest agent binary (empty: guestboot.AgentBinary).
	Agent string
	// Progress receives pull and build progress (nil: silent).
	Progress io.Writer
	// Secrets are stored in the manifest (references only) and resolved
	// at every start. A malformed declaration fails Create with
	// ErrSecretDecl before anything is pulled or written.
	Secrets secrets.Declarations
	// SecretsAudit turns on the workspace's secrets audit log, created
	// empty here.
	SecretsAudit bool
	// Network is the workspace's network, kept for every start (the zero
	// value: user mode, no published ports, no host access). One that can
	// never work fails Create with ErrNetwork before anything is pulled or
	// written; whether a published port is free is checked at each start.
	Network vmm.Network
	// Files are archived now and put into the guest by the first start,
	// before it reports ready (see files.go). A missing host path fails
	// Create with tarcopy.ErrFileSpec before anything is pulled.
	Files []tarcopy.FileSpec
	// CreatedBy marks who created the workspace (Manifest.CreatedBy; empty
	// for the CLI).
	CreatedBy string
}

// Create makes a new workspace: it pulls the image (per o.Pull), builds its
// root disk, checks the kernel, and writes the workspace's folder with an
// empty writable disk of the requested size. The workspace is left in state
// Created; Start boots it.
//
// The folder is assembled under a hidden temporary name and renamed into
// place in one step (failing if the name was taken meanwhile), so an
// interrupted Create leaves nothing List shows; GC removes the leftovers.
func Create(ctx context.Context, h home.Home, o CreateOptions) (*Info, error) {
	if err := ValidateName(o.Name); err != nil {
		return nil, err
	}
	if err := wsdir.CheckSocketPaths(h, o.Name); err != nil {
		return nil, err
	}
	if o.Image == "" {
		return nil, fmt.Errorf("workspace %s: no image given", o.Name)
	}
	if err := checkNetwork(o.Name, o.Network); err != nil {
		return nil, err
	}
	backend, err := vmm.Default()
	if err != nil {
		return nil, &wsdir.Error{Name: o.Name, Err: err}
	}
	rres, err := guestboot.ResolveResources(o.Profile, guestboot.Resources(o.Resources))
	if err != nil {
		return nil, &wsdir.Error{Name: o.Name, Err: err}
	}
	res := Resources(rres)
	sec := SecretsConfig{Declarations: o.Secrets, Audit: o.SecretsAudit}
	if err := checkDecls(sec.Declarations); err != nil {
		return nil, declError(o.Name, err)
	}
	if err := checkFiles(o.Name, o.Files); err != nil {
		return nil, err
	}
	final := h.Path(Dir, o.Name)
	if _, err := os.Lstat(final); err == nil {
		return nil, existsError(o.Name)
	}
	parts, err := guestboot.Prepare(ctx, h, guestboot.PrepareOptions{
		Image: o.Image, Pull: o.Pull, KernelPath: o.KernelPath, Agent: o.Agent, Progress: o.Progress,
		MaxImageBytes: o.MaxImageBytes,
	})
	if err != nil {
		return nil, err
	}
	pinned, err := pin(parts.Image)
	if err != nil {
		return nil, &wsdir.Error{Name: o.Name, Err: err}
	}
	kpath := ""
	if o.KernelPath != "" {
		if kpath, err = filepath.Abs(o.KernelPath); err != nil {
			return nil, err
		}
	}
	err = assemble(h, o.Name, func(w *wsDir) error {
		if err := rootfs.NewWritableDisk(ctx, h, w.DiskPath(), res.DiskBytes); err != nil {
			return &wsdir.Error{Name: o.Name, Err: err}
		}
		if err := w.storeFiles(o.Files); err != nil {
			return err
		}
		if sec.Audit {
			if err := createAuditLog(w.Path(audit.FileName)); err != nil {
				return &wsdir.Error{Name: o.Name, Err: err}
			}
		}
		m := &Manifest{
			Version: ManifestVersion,
			Name:    o.Name,
			Image: ImageRef{
				Ref:      o.Image,
				Resolved: parts.Image.Ref,
				Digest:   parts.Image.Digest.String(),
				Pinned:   pinned,
			},
			Resources:  res,
			Profile:    o.Profile,
			Backend:    backend.Name(),
			KernelPath: kpath,
			Created:    time.Now().UTC(),
			CreatedBy:  o.CreatedBy,
		}
		if err := m.SetSecrets(sec); err != nil {
			return err
		}
		network := o.Network
		network.AllowNames = slices.Clone(network.AllowNames)
		network.AddSwapHosts(o.Secrets.EgressHosts())
		if err := m.SetNetwork(NewNetworkConfig(network)); err != nil {
			return err
		}
		return wsdir.WriteManifest(w.ManifestPath(), m)
	})
	if err != nil {
		return nil, err
	}
	return newWS(h, o.Name).info(ctx, false)
}

// assemble makes a new workspace folder: it is built under a hidden
// temporary name with the lock held (so GC knows it is in progress), fill
// writes its contents (disk, manifest, ...), it is recorded as Created and
// renamed into place in one step, failing if the name was taken meanwhile.
// An interrupted assemble leaves nothing List shows; GC removes the rest.
func assemble(h home.Home, name string, fill func(w *wsDir) error) error {
	base, err := h.Ensure(Dir)
	if err != nil {
		return err
	}
	tmp := filepath.Join(base, wsdir.TmpPrefix+name+"-"+wsdir.RandSuffix())
	if err := os.Mkdir(tmp, wsdir.DirPerm); err != nil {
		return &wsdir.Error{Name: name, Err: err}
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	l, err := wsdir.TryLock(filepath.Join(tmp, wsdir.LockFile), name, "create")
	if err != nil {
		return err
	}
	defer l.Unlock()
	w := &wsDir{wsdir.At(h, name, tmp)}
	for _, d := range []string{wsdir.RunDir, wsdir.LogsDir} {
		if err := os.Mkdir(w.Path(d), wsdir.DirPerm); err != nil {
			return &wsdir.Error{Name: name, Err: err}
		}
	}
	if err := fill(w); err != nil {
		return err
	}
	if err := wsdir.WriteRecord(w.Path(wsdir.RecordFile), &wsdir.Record{State: Created}); err != nil {
		return &wsdir.Error{Name: name, Op: "write state", Err: err}
	}
	if err := fsutil.SyncDir(tmp); err != nil {
		return &wsdir.Error{Name: name, Err: err}
	}
	if err := fsutil.RenameNoReplace(tmp, h.Path(Dir, name)); err != nil {
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			return existsError(name)
		}
		return &wsdir.Error{Name: name, Err: err}
	}
	done = true
	if err := fsutil.SyncDir(base); err != nil {
		return &wsdir.Error{Name: name, Err: err}
	}
	return nil
}

func existsError(name string) error {
	return fmt.Errorf("%w: %q (pick another name, or delete it first with \"microagent delete %s\")", ErrExists, name, name)
}

// pin names the image's repository at its manifest digest, so every boot
// uses the image the workspace was created from even if the tag moves.
func pin(img *image.Image) (string, error) {
	ref, err := name.ParseReference(img.Ref, name.WeakValidation)
	if err != nil {
		return "", fmt.Errorf("image reference %s: %w", img.Ref, err)
	}
	return ref.Context().Digest(img.Digest.String()).String(), nil
}
