package workspace

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/wsdir"
)

// TestCreateCrash kills "create" with SIGKILL at several points while it
// writes the workspace folder. List must never show a half workspace: the
// name is either absent or a complete, usable workspace. GC removes the
// leftovers, and the name can then be created.
func TestCreateCrash(t *testing.T) {
	e := setup(t).withCLI(t)
	ctx := testCtx(t)
	// Pull the image and build its root disk first, so the kills land
	// while the folder is written.
	e.create(t, "warm")
	if err := Delete(ctx, e.h, DeleteOptions{Name: "warm"}); err != nil {
		t.Fatal(err)
	}
	base := e.h.Path(Dir)
	tmpFile := func(name string) func() bool {
		return func() bool {
			m, _ := filepath.Glob(filepath.Join(base, wsdir.TmpPrefix+"cr-*", name))
			return len(m) > 0
		}
	}
	points := map[string]func() bool{
		"folder made":      tmpFile(""),
		"disk being made":  tmpFile(wsdir.DiskFile),
		"manifest written": tmpFile(wsdir.ManifestFile),
		"state written":    tmpFile(wsdir.RecordFile),
	}
	for point, reached := range points {
		cmd := e.cli("create", "cr", "--image", e.ref, "--profile", "tiny", "--disk-size", "256M")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		killed := false
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
			select {
			case <-done:
			default:
				if !reached() {
					time.Sleep(time.Millisecond)
					continue
				}
				cmd.Process.Kill()
				killed = true
				<-done
			}
			break
		}
		infos, err := List(ctx, e.h)
		if err != nil {
			t.Fatalf("%s: list: %v", point, err)
		}
		t.Logf("%s: killed %v, listed %d", point, killed, len(infos))
		switch len(infos) {
		case 0:
		case 1:
			// Finished before the kill: it must be complete.
			if infos[0].Name != "cr" || infos[0].State != Created || infos[0].Digest == "" {
				t.Fatalf("%s: half workspace listed: %+v", point, infos[0])
			}
			if _, err := os.Stat(e.h.Path(Dir, "cr", wsdir.DiskFile)); err != nil {
				t.Fatalf("%s: listed without a disk: %v", point, err)
			}
			if err := Delete(ctx, e.h, DeleteOptions{Name: "cr"}); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: listed %d workspaces", point, len(infos))
		}
		if _, err := Status(ctx, e.h, "cr"); err == nil && len(infos) == 0 {
			t.Fatalf("%s: status finds a workspace list does not show", point)
		}
		rep, err := GC(ctx, e.h)
		if err != nil {
			t.Fatal(err)
		}
		if killed && len(infos) == 0 && len(rep.Removed) != 1 {
			t.Errorf("%s: gc removed %v, want the leftover folder", point, rep.Removed)
		}
		if ents, _ := os.ReadDir(base); len(ents) != 0 {
			t.Fatalf("%s: left after gc: %v", point, ents)
		}
	}
	e.create(t, "cr")
	if infos, _ := List(context.Background(), e.h); len(infos) != 1 || !strings.HasPrefix(infos[0].Image, "127.0.0.1") {
		t.Fatalf("list: %+v", infos)
	}
}
