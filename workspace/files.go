package workspace

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/internal/fsutil"
	"github.com/microagent-dev/microagent/tarcopy"
	"github.com/microagent-dev/microagent/wsdir"
)

// checkFiles validates create's file specs before anything is pulled.
func checkFiles(name string, files []tarcopy.FileSpec) error {
	for i := range files {
		if err := files[i].Check(); err != nil {
			return fmt.Errorf("workspace %s: %w", name, err)
		}
	}
	return nil
}

// storeFiles archives the specs into the workspace folder being created.
func (w *wsDir) storeFiles(files []tarcopy.FileSpec) error {
	if len(files) == 0 {
		return nil
	}
	dir := w.Path(wsdir.FilesDir)
	if err := os.Mkdir(dir, wsdir.DirPerm); err != nil {
		return fmt.Errorf("workspace %s: %w", w.Name, err)
	}
	var list []wsdir.PendingFile
	for i, f := range files {
		name := strconv.Itoa(i) + ".tar"
		if err := writeArchive(filepath.Join(dir, name), f); err != nil {
			return fmt.Errorf("workspace %s: --file %s: %w", w.Name, f, err)
		}
		list = append(list, wsdir.PendingFile{Spec: f, Archive: name})
	}
	b, _ := json.MarshalIndent(list, "", "  ")
	if err := wsdir.WriteFileAtomic(filepath.Join(dir, wsdir.FilesManifest), append(b, '\n')); err != nil {
		return fmt.Errorf("workspace %s: %w", w.Name, err)
	}
	return fsutil.SyncDir(dir)
}

func writeArchive(path string, f tarcopy.FileSpec) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, wsdir.FilePerm)
	if err != nil {
		return err
	}
	if _, err := tarcopy.Write(out, f.Host, f.WriteOptions()); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// deliverFiles puts the pending files into the guest, owned by the image's
// user, and forgets them once all are in: each copy is synced to the guest's
// disk first, so a workspace killed later still has them.
func (w *wsDir) deliverFiles(ctx context.Context, c *channel.Client, owner string, lg *log.Logger) error {
	list, err := w.PendingFiles()
	if err != nil || len(list) == 0 {
		return err
	}
	if owner == "" {
		owner = "0"
	}
	for _, p := range list {
		f, err := os.Open(w.Path(wsdir.FilesDir, p.Archive))
		if err != nil {
			return fmt.Errorf("workspace %s: --file %s: %w", w.Name, p.Spec, err)
		}
		_, err = c.CopyIn(ctx, channel.CopyRequest{Path: p.Spec.Guest, MkdirParents: true, Owner: owner, Sync: true}, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("workspace %s: put --file %s into the guest: %w", w.Name, p.Spec, err)
		}
	}
	lg.Printf("put %d file(s) given at create into the guest", len(list))
	if err := os.RemoveAll(w.Path(wsdir.FilesDir)); err != nil {
		lg.Printf("forget the delivered files: %v", err)
	}
	return nil
}
