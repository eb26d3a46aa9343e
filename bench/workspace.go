package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/vmm/usernet"
	"github.com/microagent-dev/microagent/workspace"
)

func (e *env) create(ctx context.Context, name, profile string) error {
	_, err := workspace.Create(ctx, e.h, workspace.CreateOptions{
		Name: name, Image: e.ref, Pull: image.PullMissing, Agent: e.agent, Profile: profile,
	})
	if err != nil {
		return fmt.Errorf("create workspace %s: %w", name, err)
	}
	return nil
}

func (e *env) start(ctx context.Context, name string) (*workspace.Info, error) {
	inf, err := workspace.Start(ctx, e.h, workspace.StartOptions{Name: name, Executable: e.exe, Agent: e.agent})
	if err != nil {
		return nil, fmt.Errorf("start workspace %s: %w", name, err)
	}
	if inf.State != workspace.Running {
		return nil, fmt.Errorf("start workspace %s: state %s (%s)", name, inf.State, inf.Reason)
	}
	return inf, nil
}

func (e *env) halt(ctx context.Context, name string) error {
	inf, err := workspace.Halt(ctx, e.h, workspace.HaltOptions{Name: name})
	if err != nil {
		return fmt.Errorf("halt workspace %s: %w", name, err)
	}
	if inf.State != workspace.Halted {
		return fmt.Errorf("halt workspace %s: state %s (%s)", name, inf.State, inf.Reason)
	}
	return nil
}

// libExecTrue is `exec NAME true` through the library.
func (e *env) libExecTrue(ctx context.Context, name string) error {
	es, err := workspace.Exec(ctx, e.h, workspace.ExecOptions{Name: name, Argv: []string{"true"}})
	if err != nil {
		return fmt.Errorf("exec true in workspace %s: %w", name, err)
	}
	if es.Code != 0 {
		return fmt.Errorf("exec true in workspace %s: exit %+v", name, es)
	}
	return nil
}

// cliExecTrue is `microagent --state-dir X exec NAME -- true`, a new
// process from start to exit.
func (e *env) cliExecTrue(ctx context.Context, name string) error {
	cmd := exec.CommandContext(ctx, e.exe, "--state-dir", e.h.Root, "exec", name, "--", "true")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("microagent exec %s -- true: %v: %s", name, err, out.Bytes())
	}
	return nil
}

// cleanupAll kills, then deletes, every workspace of the state directory,
// whatever state it is in. It runs on every exit path, so no VM outlives
// the benchmark; it ignores the caller's (possibly cancelled) context.
func (e *env) cleanupAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	infos, err := workspace.List(ctx, e.h)
	if err != nil {
		logf("cleanup: list workspaces: %v", err)
	}
	for _, i := range infos {
		if err := workspace.Delete(ctx, e.h, workspace.DeleteOptions{Name: i.Name, Force: true}); err != nil {
			logf("cleanup: delete workspace %s: %v", i.Name, err)
		}
	}
	workspace.GC(ctx, e.h)
}

// wsResult is the workspace section's measurements.
type wsResult struct {
	raw        []*rawBoot      // floor boots interleaved with the starts
	start      []time.Duration // Start of a halted workspace, call → return
	startBoot  []time.Duration // of which VMM start → agent answered (Info.BootSeconds)
	halt       []time.Duration // Halt of the running workspace (not a goal)
	profile    string
	memoryMiB  int
	cli, lib   []time.Duration // exec true, interleaved with raw
	mcp        []time.Duration // workspace_exec true through serve mcp
	raw2       []time.Duration // Client.Exec(true) on a microvm.Boot VM
	mem        *wsMemory
	execRounds int
}

// wsMemory is the host memory of one idle running workspace.
type wsMemory struct {
	supRSS, qemuRSS     int64 // VmRSS, bytes
	netRSS              int64 // VmRSS of the supervisor's network helper child, bytes (0: none)
	supPss, qemuPss     int64 // Pss from smaps_rollup, bytes (-1: unreadable)
	ramRSS              int64 // Rss of QEMU's guest RAM mapping (smaps), bytes
	ramMapping          int64 // size of that mapping
	guestUsed           int64 // guest MemTotal - MemFree, bytes
	guestTotal          int64 // guest MemTotal
	supPID, qemuPID     int
	ramMappingNotFound  bool
	smapsRollupReadable bool
	top                 []mapping // QEMU's largest mappings by Rss
	// tcgSize and tcgRSS are TCG's translated-code buffer: the largest
	// anonymous mapping other than guest RAM, when at least 256 MiB
	// (QEMU 7.2 reserves 1 GiB by default); -1 when there is none.
	tcgSize, tcgRSS int64
}

// mapping is one entry of /proc/PID/smaps.
type mapping struct {
	size, rss int64
	name      string // path or [heap] etc.; empty for anonymous
}

// beyond is supervisor + QEMU + network helper RSS minus the RSS of the guest RAM
// mapping.
func (m *wsMemory) beyond() int64 { return m.supRSS + m.qemuRSS + m.netRSS - m.ramRSS }

// childRSS is the VmRSS of parent's child whose command name starts with
// comm (passt runs as "passt.avx2" where it can), 0 when none.
func childRSS(parent int, comm string) int64 {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces, so split at ')'.
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open || !strings.HasPrefix(s[open+1:close], comm) {
			continue
		}
		f := strings.Fields(s[close+1:])
		if len(f) < 2 || f[1] != strconv.Itoa(parent) {
			continue
		}
		pid, _ := strconv.Atoi(strings.Fields(s)[0])
		if n, err := procStatusKB(pid, "VmRSS"); err == nil {
			return n
		}
	}
	return 0
}

// workspaceSection is section 5: named workspaces.
type workspaceSection struct{}

func (workspaceSection) usesWorkspaces() {}

func (workspaceSection) name() string { return "workspace" }

func (workspaceSection) run(ctx context.Context, e *env) (err error) {
	e.r.ws, err = measureWorkspace(ctx, e)
	return err
}

// measureWorkspace times Start of a halted workspace against raw floor
// boots (interleaved), exec true through the CLI, the library and the raw
// channel (interleaved), and the idle workspace's host memory.
func measureWorkspace(ctx context.Context, e *env) (*wsResult, error) {
	const name = "bench-ws"
	n, execN := e.opts.n, e.opts.wsExecN
	r := &wsResult{profile: guestboot.DefaultProfile, memoryMiB: guestboot.Profiles[guestboot.DefaultProfile].MemoryMiB, execRounds: execN}
	if err := e.create(ctx, name, r.profile); err != nil {
		return nil, err
	}
	// Round 0 is the first start after create (and warms the page cache):
	// not counted. Every counted start is of a halted workspace whose disk
	// has been booted before.
	for i := 0; i <= n; i++ {
		label := fmt.Sprintf("round %d/%d", i, n)
		if i == 0 {
			label = "warm-up round (first start after create)"
		}
		logf("workspace start, %s: raw boot, workspace.Start, workspace.Halt", label)
		rb, err := bootRaw(ctx, e)
		if err != nil {
			return nil, err
		}
		t := time.Now()
		inf, err := e.start(ctx, name)
		d := time.Since(t)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			r.raw = append(r.raw, rb)
			r.start = append(r.start, d)
			r.startBoot = append(r.startBoot, time.Duration(inf.BootSeconds*float64(time.Second)))
		}
		if i == n {
			break // leave it running for the exec and memory measurements
		}
		t = time.Now()
		if err := e.halt(ctx, name); err != nil {
			return nil, err
		}
		r.halt = append(r.halt, time.Since(t))
	}

	logf("exec true x%d each: CLI process, workspace.Exec, raw Client.Exec, workspace_exec through serve mcp (interleaved)", execN)
	vm, _, cleanup, err := bootVM(ctx, e, e.ref, nil)
	if err != nil {
		return nil, fmt.Errorf("raw exec VM: %w", err)
	}
	defer cleanup()
	rawExec := func() error {
		es, err := vm.Client.Exec(ctx, channel.ExecRequest{Argv: []string{"true"}}, nil, io.Discard, io.Discard)
		if err != nil {
			return fmt.Errorf("raw exec true: %w", err)
		}
		if es.Code != 0 {
			return fmt.Errorf("raw exec true: exit %+v", es)
		}
		return nil
	}
	libExec := func() error { return e.libExecTrue(ctx, name) }
	cliExec := func() error { return e.cliExecTrue(ctx, name) }
	ms, err := startMCP(ctx, e)
	if err != nil {
		return nil, err
	}
	defer ms.close()
	mcpExec := func() error { return ms.execTrue(ctx, name) }
	for i := 0; i < 5; i++ { // warm up both guests' page caches and the host's paths
		for _, f := range []func() error{rawExec, libExec, cliExec, mcpExec} {
			if err := f(); err != nil {
				return nil, err
			}
		}
	}
	timeIt := func(f func() error, into *[]time.Duration) error {
		t := time.Now()
		if err := f(); err != nil {
			return err
		}
		*into = append(*into, time.Since(t))
		return nil
	}
	for i := 0; i < execN; i++ {
		if err := timeIt(rawExec, &r.raw2); err != nil {
			return nil, err
		}
		if err := timeIt(libExec, &r.lib); err != nil {
			return nil, err
		}
		if err := timeIt(cliExec, &r.cli); err != nil {
			return nil, err
		}
		if err := timeIt(mcpExec, &r.mcp); err != nil {
			return nil, err
		}
	}
	cleanup()
	ms.close()

	logf("memory of the idle workspace")
	inf, err := workspace.Status(ctx, e.h, name)
	if err != nil {
		return nil, err
	}
	if r.mem, err = workspaceMemory(ctx, e, inf, r.memoryMiB, true); err != nil {
		return nil, err
	}
	if err := e.halt(ctx, name); err != nil {
		return nil, err
	}
	if err := workspace.Delete(ctx, e.h, workspace.DeleteOptions{Name: name}); err != nil {
		return nil, fmt.Errorf("delete workspace %s: %w", name, err)
	}
	return r, nil
}

// workspaceMemory reads the host memory of a running workspace's
// supervisor and QEMU and, when guest is set, the guest's own view of its
// used memory (through exec).
func workspaceMemory(ctx context.Context, e *env, inf *workspace.Info, memoryMiB int, guest bool) (*wsMemory, error) {
	m := &wsMemory{supPID: inf.SupervisorPID, qemuPID: inf.VMMPID, supPss: -1, qemuPss: -1}
	if m.supPID == 0 || m.qemuPID == 0 {
		return nil, fmt.Errorf("workspace %s: no supervisor or VMM PID in its status (state %s)", inf.Name, inf.State)
	}
	var err error
	if m.supRSS, err = procStatusKB(m.supPID, "VmRSS"); err != nil {
		return nil, err
	}
	if m.qemuRSS, err = procStatusKB(m.qemuPID, "VmRSS"); err != nil {
		return nil, err
	}
	m.netRSS = childRSS(m.supPID, usernet.BinaryName)
	if p, err := smapsField(fmt.Sprintf("/proc/%d/smaps_rollup", m.supPID), "Pss"); err == nil {
		m.supPss = p
	}
	if p, err := smapsField(fmt.Sprintf("/proc/%d/smaps_rollup", m.qemuPID), "Pss"); err == nil {
		m.qemuPss = p
		m.smapsRollupReadable = true
	}
	maps, err := readSmaps(m.qemuPID)
	if err != nil {
		return nil, err
	}
	m.ramMapping, m.ramRSS, err = guestRAMMapping(maps, m.qemuPID, int64(memoryMiB)<<20)
	m.tcgSize, m.tcgRSS = -1, -1
	for _, mp := range maps {
		if mp.name == "" && mp.size >= 256<<20 && mp.size != m.ramMapping && mp.size > m.tcgSize {
			m.tcgSize, m.tcgRSS = mp.size, mp.rss
		}
	}
	slices.SortFunc(maps, func(a, b mapping) int { return cmp.Compare(b.rss, a.rss) })
	m.top = maps[:min(len(maps), 6)]
	if err != nil {
		m.ramMappingNotFound = true
		logf("workspace %s: %v", inf.Name, err)
	}
	if guest {
		var out bytes.Buffer
		es, err := workspace.Exec(ctx, e.h, workspace.ExecOptions{Name: inf.Name, Argv: []string{"cat", "/proc/meminfo"}, Stdout: &out})
		if err != nil || es.Code != 0 {
			return nil, fmt.Errorf("exec cat /proc/meminfo in workspace %s: %v %+v", inf.Name, err, es)
		}
		mi := parseMeminfo(out.String())
		m.guestTotal = mi["MemTotal"]
		m.guestUsed = mi["MemTotal"] - mi["MemFree"]
	}
	return m, nil
}

// procStatusKB reads a "Key:   N kB" line of /proc/PID/status, in bytes.
func procStatusKB(pid int, key string) (int64, error) {
	return smapsField(fmt.Sprintf("/proc/%d/status", pid), key)
}

// smapsField reads the first "Key: N kB" line of a /proc file, in bytes.
func smapsField(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			return parseKB(v)
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, key)
}

func parseKB(v string) (int64, error) {
	f := strings.Fields(v)
	if len(f) == 0 {
		return 0, errors.New("empty value")
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	return n << 10, err
}

func parseMeminfo(s string) map[string]int64 {
	out := map[string]int64{}
	for _, l := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		if n, err := parseKB(v); err == nil {
			out[k] = n
		}
	}
	return out
}

// readSmaps lists the mappings of /proc/PID/smaps with their Rss.
func readSmaps(pid int) ([]mapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		fs := strings.Fields(l)
		if len(fs) >= 5 && !strings.HasSuffix(fs[0], ":") {
			// A mapping header: "start-end perms offset dev inode [path]".
			lo, hi, ok := strings.Cut(fs[0], "-")
			a, err1 := strconv.ParseUint(lo, 16, 64)
			z, err2 := strconv.ParseUint(hi, 16, 64)
			if !ok || err1 != nil || err2 != nil {
				continue
			}
			out = append(out, mapping{size: int64(z - a), name: strings.Join(fs[5:], " ")})
			continue
		}
		if v, ok := strings.CutPrefix(l, "Rss:"); ok && len(out) > 0 {
			if n, err := parseKB(v); err == nil {
				out[len(out)-1].rss = n
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("/proc/%d/smaps: %w", pid, err)
	}
	return out, nil
}

// guestRAMMapping finds QEMU's guest RAM among its mappings: the
// workspace's RAM memfd, or else (a VM without one) the anonymous mapping
// of at least ramBytes (QEMU may pad it for alignment) closest in size,
// and returns its size and resident bytes.
func guestRAMMapping(maps []mapping, pid int, ramBytes int64) (size, rss int64, err error) {
	for _, m := range maps {
		if strings.Contains(m.name, "memfd:microagent-ram") && m.size >= ramBytes {
			return m.size, m.rss, nil
		}
	}
	size = -1
	for _, m := range maps {
		if m.name == "" && m.size >= ramBytes && (size < 0 || m.size < size) {
			size, rss = m.size, m.rss
		}
	}
	if size < 0 {
		return 0, 0, fmt.Errorf("QEMU %d: no anonymous mapping of at least %d MiB in smaps", pid, ramBytes>>20)
	}
	return size, rss, nil
}
