//go:build linux

package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/tarcopy"
)

// copyFiles serves OpCopyIn and OpCopyOut (see package channel) and
// writes the final reply.
func (a *Agent) copyFiles(st io.ReadWriter, h *channel.Header) {
	var rep channel.Reply
	var stats tarcopy.Stats
	var err error
	switch {
	case a.bootErr != "":
		err = fmt.Errorf("the guest failed to boot: %s", a.bootErr)
	case h.Copy == nil:
		err = errors.New("copy without a request")
	case !filepath.IsAbs(h.Copy.Path):
		err = fmt.Errorf("guest path %q is not absolute", h.Copy.Path)
	case h.Op == channel.OpCopyIn:
		stats, err = a.copyIn(st, h.Copy)
	default:
		stats, err = copyOut(st, h.Copy)
	}
	if err != nil {
		rep = channel.ErrorReply(err)
	} else {
		rep.Data, _ = json.Marshal(stats)
	}
	channel.WriteJSON(st, channel.FrameReply, rep)
}

func (a *Agent) copyIn(st io.ReadWriter, req *channel.CopyRequest) (tarcopy.Stats, error) {
	o := tarcopy.ExtractOptions{MkdirParents: req.MkdirParents}
	if req.Owner != "" {
		id, err := lookupUser(req.Owner)
		if err != nil {
			return tarcopy.Stats{}, err
		}
		o.Owner = &tarcopy.Owner{UID: int(id.uid), GID: int(id.gid)}
	}
	r := channel.NewDataReader(st)
	var stats tarcopy.Stats
	var err error
	if req.Into {
		stats, err = tarcopy.ExtractInto(r, req.Path, o)
	} else {
		stats, err = tarcopy.Extract(r, req.Path, o)
	}
	if err != nil {
		return stats, err
	}
	// Whatever follows the archive's end (a tar program's record padding)
	// is read up to the end-of-data frame, which tells a complete copy
	// from a host that went away.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return stats, err
	}
	if req.Sync {
		if err := syncFS(req.Path); err != nil {
			return stats, err
		}
	}
	return stats, nil
}

// syncFS flushes the file system holding path (or its parent, for a path
// that is not there).
func syncFS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		f, err = os.Open(filepath.Dir(filepath.Clean(path)))
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

func copyOut(st io.Writer, req *channel.CopyRequest) (tarcopy.Stats, error) {
	clean, _ := tarcopy.SourceName(req.Path)
	if _, err := os.Lstat(clean); err != nil {
		// Refused before any data: the host has written nothing.
		return tarcopy.Stats{}, fmt.Errorf("copy source %s: %w", req.Path, unwrapPathErr(err))
	}
	return tarcopy.Write(channel.NewDataWriter(st, channel.FrameStdout), req.Path, tarcopy.WriteOptions{})
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
