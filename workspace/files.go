package workspace

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/internal/fsutil"
	"github.com/microagent-dev/microagent/tarcopy"
	"github.com/microagent-dev/microagent/wsdir"
)

// checkFiles validates create's file specs before anything is pulled.
func checkFiles(name string, files []tarcopy.FileSpec) error {
	if err := guestboot.CheckFiles(files); err != nil {
		return &wsdir.Error{Name: name, Err: err}
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
		return &wsdir.Error{Name: w.Name, Err: err}
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
		return &wsdir.Error{Name: w.Name, Err: err}
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
