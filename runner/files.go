package runner

import (
	"context"
	"errors"
	"fmt"
	"io"

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

// PutFiles copies each spec's host path into the guest over the copy
// operation, creating missing parent directories; every entry is owned by
// owner (a user spec of the image; "" for root), the user the files are
// for.
func PutFiles(ctx context.Context, c *channel.Client, files []tarcopy.FileSpec, owner string) error {
	if owner == "" {
		owner = "0"
	}
	for _, f := range files {
		pr, pw := io.Pipe()
		werr := make(chan error, 1)
		go func() {
			_, err := tarcopy.Write(pw, f.Host, f.WriteOptions())
			pw.CloseWithError(err)
			werr <- err
		}()
		_, err := c.CopyIn(ctx, channel.CopyRequest{Path: f.Guest, MkdirParents: true, Owner: owner}, pr)
		pr.CloseWithError(errStopped)
		if e := <-werr; e != nil && !errors.Is(e, errStopped) && err == nil {
			err = e
		}
		if err != nil {
			return fmt.Errorf("--file %s: %w", f, err)
		}
	}
	return nil
}

var errStopped = errors.New("copy stopped")
