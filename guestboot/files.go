package guestboot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/tarcopy"
)

// CheckFiles verifies file specs before anything is pulled or booted:
// absolute guest paths, existing host paths (made absolute).
func CheckFiles(files []tarcopy.FileSpec) error {
	for i := range files {
		if err := files[i].Check(); err != nil {
			return err
		}
	}
	return nil
}

// File is one --file to put into the guest.
type File struct {
	Spec tarcopy.FileSpec
	// Archive is a tar of Spec made beforehand (a workspace archives its
	// create-time files, so later changes on the host do not matter);
	// empty: Spec.Host is archived as it is sent.
	Archive string
}

// PutOptions say how Put puts files into the guest.
type PutOptions struct {
	// Owner owns every entry: a user spec of the image, the user the
	// files are for ("" for root).
	Owner string
	// Sync has each copy on the guest's disk before the next one starts
	// (a workspace's files must survive a kill; a run's disk is thrown
	// away).
	Sync bool
}

// Put copies each file into the guest over the copy operation, in order,
// creating missing parent directories. An error names the file.
func Put(ctx context.Context, c *channel.Client, files []File, o PutOptions) error {
	req := channel.CopyRequest{MkdirParents: true, Owner: o.Owner, Sync: o.Sync}
	if req.Owner == "" {
		req.Owner = "0"
	}
	for _, f := range files {
		req.Path = f.Spec.Guest
		if err := put(ctx, c, f, req); err != nil {
			return fmt.Errorf("--file %s: %w", f.Spec, err)
		}
	}
	return nil
}

func put(ctx context.Context, c *channel.Client, f File, req channel.CopyRequest) error {
	if f.Archive != "" {
		a, err := os.Open(f.Archive)
		if err != nil {
			return err
		}
		defer a.Close()
		_, err = c.CopyIn(ctx, req, a)
		return err
	}
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		_, err := tarcopy.Write(pw, f.Spec.Host, f.Spec.WriteOptions())
		pw.CloseWithError(err)
		werr <- err
	}()
	_, err := c.CopyIn(ctx, req, pr)
	// A copy that ended early leaves the writer blocked on the pipe.
	pr.CloseWithError(errStopped)
	if e := <-werr; e != nil && !errors.Is(e, errStopped) && err == nil {
		err = e
	}
	return err
}

var errStopped = errors.New("copy stopped")
