package workspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/tarcopy"
)

// ErrCopyPath: a copy was given a guest path that is not absolute, or
// another malformed path (a usage error: nothing was contacted).
var ErrCopyPath = errors.New("invalid copy path")

// CopyInOptions say where a tar archive goes in a running workspace.
type CopyInOptions struct {
	Name string
	// Path is the absolute guest destination. The archive's top entry is
	// put there as `docker cp` does (see tarcopy.Extract): into Path when
	// it is a directory, replacing it when it is a file, else created.
	Path string
	// Into extracts the archive as it is into the existing directory
	// Path instead (any tar stream, as `tar -x -C Path`).
	Into bool
	// MkdirParents creates Path's missing parents (mode 0755).
	MkdirParents bool
	// Owner, when set, owns every entry instead of the archive's numeric
	// owner: a user spec of the image ("name", "uid", "uid:gid",
	// "name:group").
	Owner string
	// Sync flushes the guest file system before CopyIn returns, so the
	// copy survives a kill (a halt syncs anyway).
	Sync bool
}

// CopyIn extracts a tar archive (as tarcopy.Write makes) in a running
// workspace and returns what the guest wrote. The archive travels over the
// guest channel on its own stream, relayed by the supervisor. A workspace
// that is not running is refused (ErrNotRunning, or ErrBusy while it is
// starting or halting) with nothing changed, as is a destination that
// cannot take the archive (nothing is written then).
func CopyIn(ctx context.Context, h home.Home, o CopyInOptions, archive io.Reader) (tarcopy.Stats, error) {
	if err := checkGuestPath(o.Path); err != nil {
		return tarcopy.Stats{}, err
	}
	req := channel.CopyRequest{Path: o.Path, Into: o.Into, MkdirParents: o.MkdirParents, Owner: o.Owner, Sync: o.Sync}
	w, conn, err := openCopy(ctx, h, o.Name, channel.OpCopyIn, &req)
	if err != nil {
		return tarcopy.Stats{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	st, err := channel.SendArchive(conn, archive)
	return st, w.copyErr(ctx, "copy to", o.Path, err)
}

// CopyOut writes a tar archive of the guest path src (a file, a directory
// tree or a symlink; a path ending in "/." archives a directory's
// contents) of a running workspace to w, and returns the guest's count.
func CopyOut(ctx context.Context, h home.Home, name, src string, w io.Writer) (tarcopy.Stats, error) {
	if err := checkGuestPath(src); err != nil {
		return tarcopy.Stats{}, err
	}
	ws, conn, err := openCopy(ctx, h, name, channel.OpCopyOut, &channel.CopyRequest{Path: src})
	if err != nil {
		return tarcopy.Stats{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	st, err := channel.ReceiveArchive(conn, w)
	return st, ws.copyErr(ctx, "copy from", src, err)
}

// CopyToGuest copies the host path src (file, directory or symlink; "/."
// for a directory's contents) to the guest path dst of a running
// workspace, with `docker cp` semantics (see CopyInOptions.Path). A
// missing or unreadable source fails before the workspace is contacted.
func CopyToGuest(ctx context.Context, h home.Home, o CopyInOptions, src string) (tarcopy.Stats, error) {
	clean, _ := tarcopy.SourceName(src)
	if _, err := os.Lstat(clean); err != nil {
		return tarcopy.Stats{}, fmt.Errorf("copy source %s: %w", src, unwrapPathErr(err))
	}
	if err := checkGuestPath(o.Path); err != nil {
		return tarcopy.Stats{}, err
	}
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		_, err := tarcopy.Write(pw, src, tarcopy.WriteOptions{})
		pw.CloseWithError(err)
		werr <- err
	}()
	st, err := CopyIn(ctx, h, o, pr)
	pr.CloseWithError(errCopyStopped) // ends the archive writer if the guest stopped early
	if e := <-werr; e != nil && !errors.Is(e, errCopyStopped) && err == nil {
		err = e
	}
	return st, err
}

// errCopyStopped ends the local half of a copy whose other half is done.
var errCopyStopped = errors.New("copy stopped")

// CopyFromGuest copies the guest path src of a running workspace to the
// host path dst, with `docker cp` semantics (see tarcopy.Extract): modes,
// times, symlinks and hard links are kept. The guest's agent may be in the
// hands of a hostile workload, so what it sends gains nothing on the host
// (tarcopy.ExtractOptions.Untrusted): only the requested name lands (an
// archive about another name is refused before anything is written),
// owned by this process's user, without setuid, setgid or sticky bits;
// device nodes and FIFOs are skipped (Stats.Skipped); a symlink at dst
// (or at a new dst's parent) is refused, never followed.
func CopyFromGuest(ctx context.Context, h home.Home, name, src, dst string) (tarcopy.Stats, error) {
	return copyFromGuest(ctx, h, name, src, dst, false)
}

// CopyFromGuestArchive is CopyFromGuest keeping the guest's numeric owners
// when this process is root (`microagent cp -a`); setuid, setgid and
// sticky bits and special files are dropped all the same.
func CopyFromGuestArchive(ctx context.Context, h home.Home, name, src, dst string) (tarcopy.Stats, error) {
	return copyFromGuest(ctx, h, name, src, dst, true)
}

func copyFromGuest(ctx context.Context, h home.Home, name, src, dst string, keepOwner bool) (tarcopy.Stats, error) {
	if err := checkGuestPath(src); err != nil {
		return tarcopy.Stats{}, err
	}
	if dst == "" {
		return tarcopy.Stats{}, fmt.Errorf("%w: empty host destination", ErrCopyPath)
	}
	_, top := tarcopy.SourceName(src)
	o := tarcopy.ExtractOptions{Untrusted: true, KeepOwner: keepOwner, Top: top}
	pr, pw := io.Pipe()
	type result struct {
		st  tarcopy.Stats
		err error
	}
	xc := make(chan result, 1)
	go func() {
		st, err := tarcopy.Extract(pr, dst, o)
		if err == nil {
			io.Copy(io.Discard, pr)
		}
		pr.CloseWithError(errCopyStopped)
		xc <- result{st, err}
	}()
	_, gerr := CopyOut(ctx, h, name, src, pw)
	pw.CloseWithError(gerr)
	x := <-xc
	if gerr != nil && !errors.Is(gerr, errCopyStopped) {
		return x.st, gerr
	}
	if x.err != nil {
		return x.st, fmt.Errorf("copy from %s:%s to %s: %w", name, src, dst, x.err)
	}
	return x.st, nil
}

func checkGuestPath(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty guest path", ErrCopyPath)
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%w: guest path %q is not absolute (guest paths start with /, e.g. /root/%s)", ErrCopyPath, p, p)
	}
	return nil
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// openCopy asks the supervisor for a copy stream to the guest.
func openCopy(ctx context.Context, h home.Home, name, op string, req *channel.CopyRequest) (*wsDir, net.Conn, error) {
	if err := ValidateName(name); err != nil {
		return nil, nil, err
	}
	w := newWS(h, name)
	conn, err := w.stream(ctx, "copy", func(c *supervisor.Client) (net.Conn, error) {
		if op == channel.OpCopyIn {
			return c.CopyIn(ctx, *req)
		}
		return c.CopyOut(ctx, *req)
	})
	if err != nil {
		return nil, nil, err
	}
	return w, conn, nil
}

// copyErr explains a failed copy: the guest's own words, or a lost
// connection with the workspace's state.
func (w *wsDir) copyErr(ctx context.Context, what, path string, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case channel.IsGuestCopyError(err):
		return fmt.Errorf("%s %s:%s: %w", what, w.Name, path, err)
	case errors.Is(err, errCopyStopped):
		return err
	}
	var lost interface{ Unwrap() error }
	if errors.As(err, &lost) {
		msg := fmt.Sprintf("%s %s:%s: %v", what, w.Name, path, err)
		if obs, oerr := w.observe(); oerr == nil && obs.state != Running {
			msg += fmt.Sprintf("; the workspace is %s", obs.state)
			if obs.reason != "" {
				msg += ": " + obs.reason
			}
		}
		return errors.New(msg)
	}
	return fmt.Errorf("%s %s:%s: %w", what, w.Name, path, err)
}
