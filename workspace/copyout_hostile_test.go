package workspace

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/tarcopy"
)

// fakeCopyOut stands in for a workspace whose guest agent is hostile: a
// real agent archives what it was asked for (tarcopy.Write), so a wrong
// top name cannot be had from one. This is a fake supervisor on the
// workspace's socket that answers every copy-out with archive, framed as
// the agent's answer is relayed. It returns the home to copy from.
func fakeCopyOut(t *testing.T, name string, archive []byte) home.Home {
	t.Helper()
	h := home.Home{Root: t.TempDir()}
	testenv.ServeUnix(t, newWS(h, name).SockPath(), func(c net.Conn) {
		var req supervisor.Request
		if channel.ReadJSON(c, channel.FrameHeader, &req) == nil && req.Op == supervisor.OpCopyOut {
			channel.WriteJSON(c, channel.FrameReply, supervisor.Reply{Version: supervisor.ProtocolVersion})
			channel.NewDataWriter(c, channel.FrameStdout).Write(archive)
			channel.WriteJSON(c, channel.FrameReply, channel.Reply{Data: []byte(`{"files":1}`)})
		}
	})
	return h
}

func hostileArchive(t *testing.T, hs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
	}
	tw.Close()
	return buf.Bytes()
}

// TestCopyFromGuestHostileAgent: a guest asked for /work/x.json answers
// with .bashrc, or with an entry beside the name it was asked for; the copy
// is refused naming the entry, and nothing lands in the host directory.
func TestCopyFromGuestHostileAgent(t *testing.T) {
	for _, c := range []struct {
		what    string
		archive []*tar.Header
		entry   string
	}{
		{"another top name", []*tar.Header{{Name: ".bashrc", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4}}, ".bashrc"},
		{"an entry beside the name", []*tar.Header{
			{Name: "x.json/", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: ".bashrc", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4}}, ".bashrc"},
		{"a path out", []*tar.Header{
			{Name: "x.json/", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: "x.json/../../.bashrc", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4}}, "x.json/../../.bashrc"},
	} {
		t.Run(c.what, func(t *testing.T) {
			h := fakeCopyOut(t, "evil", hostileArchive(t, c.archive...))
			homeDir := filepath.Join(t.TempDir(), "home")
			os.Mkdir(homeDir, 0o755)
			_, err := CopyFromGuest(testCtx(t), h, "evil", "/work/x.json", homeDir)
			if err == nil || !strings.Contains(err.Error(), `"`+c.entry+`"`) || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("got %v, want a refusal naming %q", err, c.entry)
			}
			for _, p := range []string{filepath.Join(homeDir, ".bashrc"), filepath.Join(filepath.Dir(homeDir), ".bashrc")} {
				if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("%s was written: %v", p, err)
				}
			}
		})
	}
}

// TestCopyFromGuestSpecialEntries: what a hostile agent sends beyond
// files (owners, setuid, device nodes, FIFOs) does not reach the host,
// through the real client path; -a keeps owners only.
func TestCopyFromGuestSpecialEntries(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("owners and device nodes only matter, and only show, as root")
	}
	archive := hostileArchive(t,
		&tar.Header{Name: "out/", Typeflag: tar.TypeDir, Mode: 0o1777, Uid: 4242, Gid: 4242},
		&tar.Header{Name: "out/sh", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 0, Gid: 0, Size: 4},
		&tar.Header{Name: "out/mine", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 4242, Gid: 4242, Size: 4},
		&tar.Header{Name: "out/sda", Typeflag: tar.TypeBlock, Mode: 0o666, Devmajor: 8},
		&tar.Header{Name: "out/mem", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 1},
		&tar.Header{Name: "out/pipe", Typeflag: tar.TypeFifo, Mode: 0o666},
	)
	h := fakeCopyOut(t, "evil", archive)
	for _, archiveMode := range []bool{false, true} {
		dst := filepath.Join(t.TempDir(), "out")
		copyOut := CopyFromGuest
		if archiveMode {
			copyOut = CopyFromGuestArchive
		}
		st, err := copyOut(testCtx(t), h, "evil", "/work/out", dst)
		if err != nil {
			t.Fatal(err)
		}
		if st.Skipped != 3 || st.Files != 2 {
			t.Errorf("-a=%v: stats %+v", archiveMode, st)
		}
		ents, _ := os.ReadDir(dst)
		if len(ents) != 2 {
			t.Errorf("-a=%v: the host got %v, want sh and mine only", archiveMode, ents)
		}
		wantUID := map[string]uint32{".": 0, "sh": 0, "mine": 0}
		if archiveMode {
			wantUID = map[string]uint32{".": 4242, "sh": 0, "mine": 4242}
		}
		checkCopied(t, archiveMode, dst, map[string]fs.FileMode{".": fs.ModeDir | 0o777, "sh": 0o755, "mine": 0o640}, wantUID)
	}
}

// checkCopied checks the mode and uid of entries of dst ("." is dst).
func checkCopied(t *testing.T, archiveMode bool, dst string, modes map[string]fs.FileMode, uids map[string]uint32) {
	t.Helper()
	for p, mode := range modes {
		fi, err := os.Lstat(filepath.Join(dst, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("-a=%v: %s: mode %v, want %v", archiveMode, p, fi.Mode(), mode)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != uids[p] {
			t.Errorf("-a=%v: %s: uid %d, want %d", archiveMode, p, uid, uids[p])
		}
	}
}

// TestCopyFromGuestPlantedSymlink: the first copy brings a symlink to a
// host directory back as dst; the second copy into dst is refused instead
// of writing through it.
func TestCopyFromGuestPlantedSymlink(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	os.Mkdir(outside, 0o755)
	dst := filepath.Join(base, "out")
	h := fakeCopyOut(t, "evil", hostileArchive(t, &tar.Header{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside}))
	if _, err := CopyFromGuest(testCtx(t), h, "evil", "/work/out", dst); err != nil {
		t.Fatal(err)
	}
	h = fakeCopyOut(t, "evil", hostileArchive(t,
		&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "./authorized_keys", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4}))
	_, err := CopyFromGuest(testCtx(t), h, "evil", "/work/out/.", dst)
	if !errors.Is(err, tarcopy.ErrDestination) || !strings.Contains(err.Error(), "is a symlink") {
		t.Fatalf("second copy: got %v, want a refusal of the symlink", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("wrote through the planted symlink: %v", ents)
	}
}

// TestCopyFromGuestDropsWhatTheGuestMade runs a real guest that makes a
// setuid-root file, files of other owners, device nodes, a FIFO and a
// symlink, and copies them out: on the host there is no setuid bit, no
// device node or FIFO, and every file belongs to the invoking user; -a
// brings the guest's owners, still without the setuid bit.
func TestCopyFromGuestDropsWhatTheGuestMade(t *testing.T) {
	e := setup(t)
	e.create(t, "hostile")
	e.start(t, "hostile")
	script := `set -e; mkdir -p /work/out; cd /work/out
echo '#!/bin/sh' > suid; chmod 4755 suid
echo x > theirs; chown 1234:1234 theirs
mknod sda b 8 0; mknod null c 1 3; mkfifo pipe
ln -s /etc/passwd link; chmod 1777 /work/out
stat -c '%n %a %u %F' suid theirs sda null pipe link`
	if c, out, errs := e.exec(t, "hostile", "", "sh", "-c", script); c != 0 {
		t.Fatalf("prepare the guest (%d): %s %s", c, out, errs)
	}
	me := uint32(os.Geteuid())
	for _, archiveMode := range []bool{false, true} {
		dst := filepath.Join(t.TempDir(), "out")
		copyOut := CopyFromGuest
		if archiveMode {
			copyOut = CopyFromGuestArchive
		}
		st, err := copyOut(testCtx(t), e.h, "hostile", "/work/out", dst)
		if err != nil {
			t.Fatal(err)
		}
		if st.Skipped != 3 || st.Files != 2 || st.Symlinks != 1 {
			t.Errorf("-a=%v: stats %+v, want 2 files, 1 symlink, 3 skipped", archiveMode, st)
		}
		var names []string
		ents, _ := os.ReadDir(dst)
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if strings.Join(names, ",") != "link,suid,theirs" {
			t.Errorf("-a=%v: the host got %v, want link, suid and theirs only", archiveMode, names)
		}
		owner := map[string]uint32{".": me, "suid": me, "theirs": me}
		if archiveMode && me == 0 {
			owner["theirs"] = 1234
		}
		checkCopied(t, archiveMode, dst, map[string]fs.FileMode{".": fs.ModeDir | 0o777, "suid": 0o755, "theirs": 0o644}, owner)
		if l, err := os.Readlink(filepath.Join(dst, "link")); err != nil || l != "/etc/passwd" {
			t.Errorf("-a=%v: link: %q %v", archiveMode, l, err)
		}
	}
}
