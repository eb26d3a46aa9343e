package supervisor

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/wsdir"
)

// deliverFiles puts the pending files into the guest, owned by the image's
// user, and forgets them once all are in: each copy is synced to the guest's
// disk first, so a workspace killed later still has them.
func deliverFiles(ctx context.Context, w *wsdir.Dir, c *channel.Client, owner string, lg *log.Logger) error {
	list, err := w.PendingFiles()
	if err != nil || len(list) == 0 {
		return err
	}
	files := make([]guestboot.File, len(list))
	for i, p := range list {
		files[i] = guestboot.File{Spec: p.Spec, Archive: w.Path(wsdir.FilesDir, p.Archive)}
	}
	if err := guestboot.Put(ctx, c, files, guestboot.PutOptions{Owner: owner, Sync: true}); err != nil {
		return fmt.Errorf("workspace %s: put the files given at create into the guest: %w", w.Name, err)
	}
	lg.Printf("put %d file(s) given at create into the guest", len(list))
	if err := os.RemoveAll(w.Path(wsdir.FilesDir)); err != nil {
		lg.Printf("forget the delivered files: %v", err)
	}
	return nil
}
