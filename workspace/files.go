package workspace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/tarcopy"
)

// Files given at create (--file HOST:GUEST[:MODE]) are archived into the
// workspace folder at create, so later changes to the host files do not
// matter, and put into the guest by the first start that boots, before
// the start reports ready; then they are forgotten. A start whose copy
// fails fails (the workspace is then failed) and keeps them for the next
// start.
const (
	filesDir      = "files"      // pending files: one archive per spec
	filesManifest = "files.json" // their guest paths, in order
)

// pendingFile is one entry of files/files.json.
type pendingFile struct {
	// Spec is the spec as given (its host path for messages only).
	Spec tarcopy.FileSpec `json:"spec"`
	// Archive is the file name in files/ of its archive.
	Archive string `json:"archive"`
}

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
	dir := w.path(filesDir)
	if err := os.Mkdir(dir, dirPerm); err != nil {
		return fmt.Errorf("workspace %s: %w", w.name, err)
	}
	var list []pendingFile
	for i, f := range files {
		name := strconv.Itoa(i) + ".tar"
		if err := writeArchive(filepath.Join(dir, name), f); err != nil {
			return fmt.Errorf("workspace %s: --file %s: %w", w.name, f, err)
		}
		list = append(list, pendingFile{Spec: f, Archive: name})
	}
	b, _ := json.MarshalIndent(list, "", "  ")
	if err := writeFileAtomic(filepath.Join(dir, filesManifest), append(b, '\n')); err != nil {
		return fmt.Errorf("workspace %s: %w", w.name, err)
	}
	return syncDir(dir)
}

func writeArchive(path string, f tarcopy.FileSpec) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
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

// pendingFiles lists the files still to put into the guest.
func (w *wsDir) pendingFiles() ([]pendingFile, error) {
	b, err := os.ReadFile(w.path(filesDir, filesManifest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("workspace %s: pending files: %w", w.name, err)
	}
	var list []pendingFile
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("workspace %s: pending files list %s is corrupt: %w", w.name, w.path(filesDir, filesManifest), err)
	}
	return list, nil
}

// deliverFiles puts the pending files into the guest, owned by the image's
// user, and forgets them once all are in: each copy is synced to the guest's
// disk first, so a workspace killed later still has them.
func (w *wsDir) deliverFiles(ctx context.Context, c *channel.Client, owner string, lg *log.Logger) error {
	list, err := w.pendingFiles()
	if err != nil || len(list) == 0 {
		return err
	}
	if owner == "" {
		owner = "0"
	}
	for _, p := range list {
		f, err := os.Open(w.path(filesDir, p.Archive))
		if err != nil {
			return fmt.Errorf("workspace %s: --file %s: %w", w.name, p.Spec, err)
		}
		_, err = c.CopyIn(ctx, channel.CopyRequest{Path: p.Spec.Guest, MkdirParents: true, Owner: owner, Sync: true}, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("workspace %s: put --file %s into the guest: %w", w.name, p.Spec, err)
		}
	}
	lg.Printf("put %d file(s) given at create into the guest", len(list))
	if err := os.RemoveAll(w.path(filesDir)); err != nil {
		lg.Printf("forget the delivered files: %v", err)
	}
	return nil
}
