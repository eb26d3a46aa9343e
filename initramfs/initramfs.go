// Package initramfs builds the guest's initial RAM filesystem: the agent as
// /init, the kernel modules it loads first, and the few folders and the
// console device it needs before it mounts anything.
//
// Archives are cached under <state>/initramfs/, named by the hash of what
// goes into them, so a boot normally only stats the agent and reuses the
// archive.
package initramfs

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cavaliergopher/cpio"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/fsutil"
	"github.com/microagent-dev/microagent/kernel"
)

// FormatVersion is part of every cache key: bump it whenever the archive
// layout changes, so old cached archives are not reused.
const FormatVersion = 1

// Ext is the cached archive's file extension. The archive is stored
// uncompressed: measured under TCG with a 5.3 MB agent (TestMeasureCompression),
// the plain 6.1 MB archive reached /init's marker fastest (min 2.41 s against
// 2.59-2.62 s for gzip at 3.3-3.5 MB), because the guest inflates gzip in
// emulated code while QEMU loads the plain file at host speed.
const Ext = ".cpio"

// ModulesDir is where the modules are in the guest, and OrderFile lists
// their file names (relative to ModulesDir) in load order, one per line.
const (
	ModulesDir = "/lib/modules"
	OrderFile  = "/lib/modules/order"
)

// Dirs are the folders the archive creates (the agent mounts over them).
var Dirs = []string{"/dev", "/proc", "/sys", "/run", "/tmp", "/mnt", "/newroot", "/lib", ModulesDir}

// Console device numbers: the kernel opens /dev/console for init's stdio
// before anything could mount devtmpfs.
const (
	consoleMajor = 5
	consoleMinor = 1
)

// Build writes a newc cpio archive holding agent as /init, the modules of
// k under /lib/modules with their load order, the folders in Dirs and
// /dev/console. Module files are checked against k's hashes as they are
// copied, so the archive holds exactly what k records.
func Build(w io.Writer, agent string, k *kernel.Kernel) error {
	data, err := readAgent(agent)
	if err != nil {
		return err
	}
	return build(w, agent, data, k)
}

// build writes the archive with the agent's bytes already read, so that
// Ensure hashes and archives the very same bytes.
func build(w io.Writer, agent string, agentData []byte, k *kernel.Kernel) error {
	if k == nil {
		return errors.New("initramfs: no kernel given")
	}
	if err := checkAgent(agent, agentData); err != nil {
		return err
	}
	cw := cpio.NewWriter(w)
	for _, d := range Dirs {
		mode := cpio.FileMode(cpio.TypeDir | 0o755)
		if d == "/tmp" {
			mode = cpio.TypeDir | cpio.ModeSticky | 0o777
		}
		if err := cw.WriteHeader(&cpio.Header{Name: archName(d), Mode: mode, Links: 2}); err != nil {
			return fmt.Errorf("initramfs: write %s: %w", d, err)
		}
		if d == "/dev" {
			if err := writeCharDev(w, cw, "/dev/console", 0o600, consoleMajor, consoleMinor); err != nil {
				return err
			}
		}
	}

	if err := cw.WriteHeader(&cpio.Header{Name: "init", Mode: cpio.TypeReg | 0o755, Size: int64(len(agentData))}); err != nil {
		return fmt.Errorf("initramfs: write /init: %w", err)
	}
	if _, err := cw.Write(agentData); err != nil {
		return fmt.Errorf("initramfs: write /init: %w", err)
	}

	var order strings.Builder
	for _, m := range k.Modules {
		name := m.Name + ".ko"
		if err := copyModule(cw, k, m, name); err != nil {
			return err
		}
		order.WriteString(name + "\n")
	}
	if err := cw.WriteHeader(&cpio.Header{Name: archName(OrderFile), Mode: cpio.TypeReg | 0o644, Size: int64(order.Len())}); err != nil {
		return fmt.Errorf("initramfs: write %s: %w", OrderFile, err)
	}
	if _, err := io.WriteString(cw, order.String()); err != nil {
		return fmt.Errorf("initramfs: write %s: %w", OrderFile, err)
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("initramfs: finish archive: %w", err)
	}
	return nil
}

// archName turns a guest path into an archive member name (no leading
// slash, as the kernel's own gen_init_cpio writes them).
func archName(p string) string { return strings.TrimPrefix(p, "/") }

// maxAgentSize bounds what is read into memory as the agent.
const maxAgentSize = 512 << 20

// readAgent reads the agent binary.
func readAgent(agent string) ([]byte, error) {
	f, err := os.Open(agent)
	if err != nil {
		return nil, fmt.Errorf("initramfs: agent binary: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("initramfs: agent binary: %w", err)
	}
	if !st.Mode().IsRegular() || st.Size() > maxAgentSize {
		return nil, fmt.Errorf("initramfs: agent %s is not a regular file of at most %d MiB", agent, maxAgentSize>>20)
	}
	data := make([]byte, st.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("initramfs: read agent %s: %w (did it change while being read?)", agent, err)
	}
	return data, nil
}

// checkAgent checks that the agent can be /init: a statically linked
// x86-64 ELF (there is no dynamic loader in the initramfs, and a dynamic
// /init fails with a bare kernel panic).
func checkAgent(agent string, data []byte) error {
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("initramfs: agent %s is not an ELF executable: %v", agent, err)
	}
	defer ef.Close()
	if ef.Machine != elf.EM_X86_64 {
		return fmt.Errorf("initramfs: agent %s is built for %s; the guest is x86-64 (GOARCH=amd64)", agent, ef.Machine)
	}
	if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
		return fmt.Errorf("initramfs: agent %s is an ELF %s, not an executable", agent, ef.Type)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("initramfs: agent %s is dynamically linked; build it static (CGO_ENABLED=0)", agent)
		}
	}
	return nil
}

// copyModule writes one module into the archive, checking its hash.
func copyModule(cw *cpio.Writer, k *kernel.Kernel, m kernel.Module, name string) error {
	path := k.ModulePath(m)
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("initramfs: module %s of kernel %q: %w", m.Name, k.Name, err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != m.SHA256 {
		return fmt.Errorf("initramfs: module %s has SHA-256 %s, kernel %q records %s: run \"microagent kernel install --force\"",
			path, got, k.Name, m.SHA256)
	}
	if err := cw.WriteHeader(&cpio.Header{Name: archName(ModulesDir + "/" + name), Mode: cpio.TypeReg | 0o644, Size: int64(len(data))}); err != nil {
		return fmt.Errorf("initramfs: write module %s: %w", name, err)
	}
	if _, err := cw.Write(data); err != nil {
		return fmt.Errorf("initramfs: write module %s: %w", name, err)
	}
	return nil
}

// writeCharDev writes a character device entry by hand: cavaliergopher/cpio
// (v1.0.1) has no rdevmajor/rdevminor fields and writes them as zero, which
// would make /dev/console device 0,0. The entry goes straight to w between
// two library entries; the previous entry has no data, so no padding is
// pending (Flush makes sure), and the inode number is one the library's
// counter (1, 2, ...) will not reach.
func writeCharDev(w io.Writer, cw *cpio.Writer, name string, perm, major, minor int) error {
	if err := cw.Flush(); err != nil {
		return fmt.Errorf("initramfs: write %s: %w", name, err)
	}
	member := archName(name)
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		0x7fff0000,         // inode
		cpio.TypeChar|perm, // mode
		0, 0,               // uid, gid
		1,    // nlink
		0,    // mtime
		0,    // filesize
		0, 0, // devmajor, devminor
		major, minor, // rdevmajor, rdevminor
		len(member)+1, // namesize, with the NUL
		0)             // check
	buf := []byte(hdr + member + "\x00")
	for len(buf)%4 != 0 { // name is padded to a 4-byte boundary
		buf = append(buf, 0)
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("initramfs: write %s: %w", name, err)
	}
	return nil
}

// key returns the cache key of the archive for an agent with SHA-256
// agentSum and kernel k: the SHA-256 of the format version, the agent's hash
// and the modules' names and hashes (Build checks the module files against
// those hashes, so the key names the archive's exact contents).
func key(agentSum string, k *kernel.Kernel) string {
	h := sha256.New()
	fmt.Fprintf(h, "microagent initramfs v%d %s\nagent %s\n", FormatVersion, Ext, agentSum)
	for _, m := range k.Modules {
		fmt.Fprintf(h, "module %s %s\n", m.Name, m.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Ensure returns the path of the cached archive for agent and k, building
// it first when it is missing. It runs at every boot. Hashing a 5 MB agent
// costs ~6 ms on the build host, so the agent's hash is remembered in
// agents.json against its (size, mtime, ctime, inode, device) stamp: a hit
// then costs two stats and a small read. A stamp is only taken for a file
// left unchanged for racyMargin, and any difference means a full re-hash.
// Building is atomic (temp file in the same folder, fsync, rename), so a
// crash or a full disk never leaves a partial archive under the final name,
// and concurrent callers at worst build the same bytes twice.
func Ensure(h home.Home, agent string, k *kernel.Kernel) (string, error) {
	if k == nil {
		return "", errors.New("initramfs: no kernel given")
	}
	abs, err := filepath.Abs(agent)
	if err != nil {
		return "", fmt.Errorf("initramfs: agent %q: %w", agent, err)
	}
	dir, err := h.Ensure(home.InitramfsDir)
	if err != nil {
		return "", err
	}
	cur, err := fsutil.StatStamp(abs)
	if err != nil {
		return "", fmt.Errorf("initramfs: agent binary: %w", err)
	}
	stampPath := filepath.Join(dir, StampFile)
	stamps := fsutil.LoadStamps(stampPath, stampField)
	if sum, ok := stamps.Hash(abs, cur); ok {
		path := filepath.Join(dir, key(sum, k)+Ext)
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
			return path, nil
		}
	}

	start := time.Now()
	data, err := readAgent(abs)
	if err != nil {
		return "", err
	}
	agentHashes.Add(1)
	sum := sha256.Sum256(data)
	agentSum := hex.EncodeToString(sum[:])
	path := filepath.Join(dir, key(agentSum, k)+Ext)
	if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("initramfs: %w", err)
		}
		if err := buildFile(path, abs, data, k); err != nil {
			return "", err
		}
	}
	if stamps.Record(abs, abs, cur, agentSum, start, racyMargin) {
		saveStamps(stampPath, stamps)
	}
	return path, nil
}

// StampFile remembers the hashes of agent binaries, in the initramfs folder.
const StampFile = "agents.json"

// stampField is the JSON field of StampFile that holds the stamps, by the
// agent's absolute path.
const stampField = "agents"

// racyMargin is how long a file must have been left untouched before its
// stamp may stand in for its hash: file times come from a coarse clock, so
// a write in the same tick as the stamp could leave them unchanged (git's
// "racy clean" rule).
var racyMargin = 3 * time.Second

// agentHashes counts full reads of the agent, so tests can see the stamp work.
var agentHashes atomic.Int64

// saveStamps writes agents.json, dropping agents that are gone. Best
// effort: concurrent writers may drop each other's entry, which only costs
// a re-hash.
func saveStamps(path string, stamps fsutil.Stamps) {
	for p := range stamps {
		if _, err := os.Stat(p); err != nil {
			delete(stamps, p)
		}
	}
	_ = stamps.Save(path, stampField)
}

// buildFile builds the archive into a temp file (0600) beside path and
// renames it into place. A failed sync of the folder after the rename is
// ignored: a lost entry is rebuilt anyway.
func buildFile(path, agent string, agentData []byte, k *kernel.Kernel) error {
	var buildErr error
	err := fsutil.WriteAtomic(path, 0o600, func(f *os.File) error {
		bw := bufio.NewWriterSize(f, 1<<20)
		if buildErr = build(bw, agent, agentData, k); buildErr != nil {
			return buildErr
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("write %s: %w", f.Name(), err)
		}
		return nil
	})
	var dirErr *fsutil.DirSyncError
	switch {
	case err == nil || errors.As(err, &dirErr):
		return nil
	case err == buildErr:
		return err // already says "initramfs: ..."
	}
	return fmt.Errorf("initramfs: %w", err)
}
