package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/internal/fsutil"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/qemu"
	"github.com/microagent-dev/microagent/workspace"
)

// A snapshot's files inside <workspace>/snapshots/<tag>/ (the workspace
// package's layout; the floor reads them directly).
const (
	snapStateFile  = "state"
	snapMemoryFile = "memory"
	snapDiskFile   = "disk.ext4"
	snapBaseTag    = "base"
)

// snapResult is section 10: snapshot, restore and fork, per guest size.
type snapResult struct {
	sizes []*snapSize
}

// snapSize is section 10 for one guest memory size.
type snapSize struct {
	memoryMiB int
	name      string
	// Library Pause and Resume of the running workspace, call → return.
	pause, resume []time.Duration
	// CreateSnapshot of the running workspace, and its size on disk.
	create     []time.Duration
	createSize []int64
	// The snapshot the restores and forks use: its files' allocated bytes.
	baseState, baseMemory, baseDisk, baseTotal int64
	// baseMemoryNonZero is how much of the RAM file is not zero (4 KiB
	// blocks): what a zero-skipping copy would have to store.
	baseMemoryNonZero int64
	// Fork to exec-ready: Fork (new workspace, disk copy, links), Start
	// (supervisor, QEMU, state load, agent hello), exec true.
	forkCall, forkStart, forkBoot, forkExec, fork []time.Duration
	forkExec2, restoreExec2                       []time.Duration // a second exec true right after
	// Restore of the halted source to exec-ready: Start FromSnapshot (disk
	// roll-back, RAM copy into its memfd, QEMU, load, hello), exec true.
	restoreStart, restoreBoot, restoreExec, restore []time.Duration
	// The floor: bare QEMU with -incoming defer, the snapshot's RAM file
	// mapped privately, LoadState, Resume. No supervisor, no agent.
	floorStart, floorLoad, floorResume, floor []time.Duration
	floorCPU                                  []time.Duration // QEMU's CPU time at Resume's return
	floorDiskCopy                             []time.Duration // the disk copy a fork also makes (not in the floor)
	// Beyond the floor: connect to the resumed agent, hello, exec true
	// (what microvm.Boot adds, without the supervisor).
	floorExec                  []time.Duration
	floorReconnect, floorHello []time.Duration // the first two parts of floorExec
	floorResumed               []time.Duration // the third: OpResumed (clock, entropy)
	floorExecCPU               []time.Duration // QEMU's CPU time over floorExec
	floorExec2                 []time.Duration // a second exec true right after
	floorArgs                  []string
}

// snapshotSection is section 10: pause/resume, snapshot create, restore
// and fork to exec-ready for each -snap-mib guest size, against a bare
// QEMU start with -incoming defer + state load of the same snapshot.
type snapshotSection struct{}

func (snapshotSection) usesWorkspaces() {}

func (snapshotSection) name() string { return "snapshot" }

func (snapshotSection) run(ctx context.Context, e *env) error {
	r := &snapResult{}
	for _, mib := range e.opts.snapMiB {
		s, err := measureSnapSize(ctx, e, mib)
		if err != nil {
			return fmt.Errorf("%d MiB guest: %w", mib, err)
		}
		r.sizes = append(r.sizes, s)
	}
	e.r.snap = r
	return nil
}

// measureSnapSize creates and starts one workspace of memoryMiB, times
// pause/resume and snapshot create on it, then, round by round (one
// uncounted round first), the floor, a fork to exec-ready and a restore to
// exec-ready, with only one VM running at a time.
func measureSnapSize(ctx context.Context, e *env, memoryMiB int) (*snapSize, error) {
	n := e.opts.n
	name := fmt.Sprintf("snap%d", memoryMiB)
	s := &snapSize{memoryMiB: memoryMiB, name: name}
	logf("snapshot, %d MiB: create and start workspace %s", memoryMiB, name)
	if _, err := workspace.Create(ctx, e.h, workspace.CreateOptions{
		Name: name, Image: e.ref, Agent: e.agent, Resources: workspace.Resources{MemoryMiB: memoryMiB},
	}); err != nil {
		return nil, fmt.Errorf("create workspace %s: %w", name, err)
	}
	defer workspace.Delete(context.WithoutCancel(ctx), e.h, workspace.DeleteOptions{Name: name, Force: true})
	inf, err := e.start(ctx, name)
	if err != nil {
		return nil, err
	}
	if inf.Resources.MemoryMiB != memoryMiB {
		return nil, fmt.Errorf("workspace %s has %d MiB, want %d", name, inf.Resources.MemoryMiB, memoryMiB)
	}
	plan, err := readPlan(filepath.Join(inf.Dir, "run", "boot.json"))
	if err != nil {
		return nil, err
	}
	if err := e.libExecTrue(ctx, name); err != nil {
		return nil, err
	}

	logf("snapshot, %d MiB: pause/resume x%d", memoryMiB, n)
	for i := 0; i <= n; i++ {
		t := time.Now()
		if _, err := workspace.Pause(ctx, e.h, name); err != nil {
			return nil, fmt.Errorf("pause %s: %w", name, err)
		}
		dp := time.Since(t)
		t = time.Now()
		if _, err := workspace.Resume(ctx, e.h, name); err != nil {
			return nil, fmt.Errorf("resume %s: %w", name, err)
		}
		dr := time.Since(t)
		if i > 0 {
			s.pause, s.resume = append(s.pause, dp), append(s.resume, dr)
		}
	}
	if err := e.libExecTrue(ctx, name); err != nil {
		return nil, fmt.Errorf("after resume: %w", err)
	}

	// The first snapshot is the base the forks and restores use, and the
	// uncounted warm-up of create.
	logf("snapshot, %d MiB: snapshot create x%d (+1 kept as the base)", memoryMiB, n)
	if _, err := workspace.CreateSnapshot(ctx, e.h, workspace.SnapshotOptions{Name: name, Tag: snapBaseTag}); err != nil {
		return nil, err
	}
	baseDir := filepath.Join(inf.Dir, "snapshots", snapBaseTag)
	s.baseState = allocated(filepath.Join(baseDir, snapStateFile))
	s.baseMemory = allocated(filepath.Join(baseDir, snapMemoryFile))
	s.baseDisk = allocated(filepath.Join(baseDir, snapDiskFile))
	if s.baseMemory < 0 {
		return nil, fmt.Errorf("snapshot %s:%s has no RAM file (RAM not shared?): the fork floor needs it", name, snapBaseTag)
	}
	if s.baseMemoryNonZero, err = nonZeroBytes(filepath.Join(baseDir, snapMemoryFile)); err != nil {
		return nil, err
	}
	for i := 1; i <= n; i++ {
		tag := fmt.Sprintf("c%d", i)
		t := time.Now()
		snap, err := workspace.CreateSnapshot(ctx, e.h, workspace.SnapshotOptions{Name: name, Tag: tag})
		if err != nil {
			return nil, err
		}
		s.create = append(s.create, time.Since(t))
		s.createSize = append(s.createSize, snap.SizeBytes)
		if err := workspace.DeleteSnapshot(e.h, name, tag); err != nil {
			return nil, err
		}
	}
	snaps, err := workspace.ListSnapshots(e.h, name)
	if err != nil {
		return nil, err
	}
	for _, sn := range snaps {
		if sn.Tag == snapBaseTag {
			s.baseTotal = sn.SizeBytes
		}
	}
	if err := e.halt(ctx, name); err != nil {
		return nil, err
	}

	for i := 0; i <= n; i++ {
		label := fmt.Sprintf("round %d/%d", i, n)
		if i == 0 {
			label = "warm-up round"
		}
		logf("snapshot, %d MiB, %s: floor, fork to exec-ready, restore to exec-ready", memoryMiB, label)
		fl, err := snapFloor(ctx, e, plan, baseDir)
		if err != nil {
			return nil, fmt.Errorf("floor: %w", err)
		}
		fk, err := forkRound(ctx, e, name, fmt.Sprintf("%s-f%d", name, i))
		if err != nil {
			return nil, err
		}
		rs, err := restoreRound(ctx, e, name)
		if err != nil {
			return nil, err
		}
		if err := e.halt(ctx, name); err != nil {
			return nil, err
		}
		s.floorArgs = fl.args
		if i == 0 {
			continue
		}
		s.floorStart = append(s.floorStart, fl.start)
		s.floorLoad = append(s.floorLoad, fl.load)
		s.floorResume = append(s.floorResume, fl.resume)
		s.floor = append(s.floor, fl.total)
		s.floorCPU = append(s.floorCPU, fl.cpu)
		s.floorDiskCopy = append(s.floorDiskCopy, fl.diskCopy)
		s.floorExec = append(s.floorExec, fl.exec)
		s.floorReconnect = append(s.floorReconnect, fl.reconnect)
		s.floorHello = append(s.floorHello, fl.hello)
		s.floorResumed = append(s.floorResumed, fl.resumed)
		s.floorExecCPU = append(s.floorExecCPU, fl.execCPU)
		s.floorExec2 = append(s.floorExec2, fl.exec2)
		s.forkCall = append(s.forkCall, fk.call)
		s.forkStart = append(s.forkStart, fk.start)
		s.forkBoot = append(s.forkBoot, fk.boot)
		s.forkExec = append(s.forkExec, fk.exec)
		s.forkExec2 = append(s.forkExec2, fk.exec2)
		s.restoreExec2 = append(s.restoreExec2, rs.exec2)
		s.fork = append(s.fork, fk.total)
		s.restoreStart = append(s.restoreStart, rs.start)
		s.restoreBoot = append(s.restoreBoot, rs.boot)
		s.restoreExec = append(s.restoreExec, rs.exec)
		s.restore = append(s.restore, rs.total)
	}
	return s, nil
}

// readPlan reads a running workspace's boot plan: the floor starts a
// machine with the same devices.
func readPlan(path string) (*guestboot.Machine, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("the workspace's boot plan: %w", err)
	}
	var plan supervisor.Plan
	if err := json.Unmarshal(b, &plan); err != nil {
		return nil, fmt.Errorf("the workspace's boot plan %s: %w", path, err)
	}
	p := plan.Machine
	if p.Kernel == "" || p.Initrd == "" || p.RootDisk == "" || p.MemoryMiB == 0 || p.CPUs == 0 {
		return nil, fmt.Errorf("the workspace's boot plan %s lacks kernel, initrd, root disk, memory or CPUs (has its format changed?)", path)
	}
	return &p, nil
}

// nonZeroBytes counts the bytes of path's 4 KiB blocks that are not all
// zero.
func nonZeroBytes(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var zero [4096]byte
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := io.ReadFull(f, buf)
		for i := 0; i < k; i += len(zero) {
			b := buf[i:min(i+len(zero), k)]
			if !bytes.Equal(b, zero[:len(b)]) {
				n += int64(len(b))
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return n, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", path, err)
		}
	}
}

// allocated is the space a file's blocks use (-1: no such file).
func allocated(path string) int64 {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return -1
	}
	return st.Blocks * 512
}

// floorRound is one bare resume of a snapshot.
type floorRound struct {
	diskCopy                   time.Duration
	start, load, resume, total time.Duration
	cpu                        time.Duration
	exec                       time.Duration // after total: connect, hello, exec true
	reconnect, hello, resumed  time.Duration // parts of exec
	execCPU                    time.Duration // QEMU's CPU time over exec (-1: unknown)
	exec2                      time.Duration // a second exec true
	args                       []string
}

// snapFloor resumes a workspace snapshot the barest way: QEMU started by
// the backend with the workspace's devices and -incoming defer, the
// snapshot's RAM file mapped privately, LoadState of its device state,
// Resume. The writable disk is a copy of the snapshot's, made first and
// timed apart (a fork makes the same copy). After the floor's clock stops,
// it connects to the resumed agent, sends hello and the resumed request
// (as the supervisor does), and runs exec true, to check the
// machine really runs and to time that part separately.
func snapFloor(ctx context.Context, e *env, p *guestboot.Machine, snapDir string) (*floorRound, error) {
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	dir, err := e.vmDir()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	r := &floorRound{}
	disk := filepath.Join(dir, "disk.ext4")
	src := filepath.Join(snapDir, snapDiskFile)
	fi, err := os.Stat(src)
	if err != nil {
		return nil, err
	}
	t := time.Now()
	if err := fsutil.CopySparseFile(ctx, src, disk, fi.Size(), nil); err != nil {
		return nil, fmt.Errorf("copy the snapshot's disk: %w", err)
	}
	r.diskCopy = time.Since(t)
	mem, err := os.Open(filepath.Join(snapDir, snapMemoryFile))
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	t = time.Now()
	m, err := e.backend.StartWith(ctx, qemu.MachineConfig{Config: vmm.Config{
		Kernel:    p.Kernel,
		Initrd:    p.Initrd,
		Cmdline:   "init_on_free=1", // as the supervisor boots it
		MemoryMiB: p.MemoryMiB,
		CPUs:      p.CPUs,
		Disks: []vmm.Disk{
			{Path: p.RootDisk, Format: "raw", ReadOnly: true},
			{Path: disk, Format: "raw"},
		},
		ChannelName:   channel.PortName,
		SerialLog:     filepath.Join(dir, "console.log"),
		RuntimeDir:    dir,
		DieWithParent: true,
		Network:       p.Network,
		Memory:        &vmm.Memory{File: mem, Shared: false},
		Incoming:      true,
	}})
	if err != nil {
		return nil, fmt.Errorf("start QEMU: %w", err)
	}
	defer func() { m.Kill(); m.Wait() }()
	r.start = time.Since(t)
	r.args = m.Args()
	t1 := time.Now()
	if err := m.LoadState(ctx, filepath.Join(snapDir, snapStateFile)); err != nil {
		return nil, err
	}
	r.load = time.Since(t1)
	t1 = time.Now()
	if err := m.Resume(ctx); err != nil {
		return nil, err
	}
	r.resume = time.Since(t1)
	r.total = time.Since(t)
	if c, err := procCPU(m.PID()); err == nil {
		r.cpu = c
	} else {
		r.cpu = -1
	}

	cpu := startCPU(m.PID())
	t = time.Now()
	// As microvm.Boot does for a restore: the host connects only once the
	// guest runs again.
	conn, err := m.DialAgent(ctx)
	if err != nil {
		return nil, fmt.Errorf("channel socket: %w", err)
	}
	client, err := channel.Reconnect(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reconnect to the resumed agent: %w", err)
	}
	defer client.Close()
	r.reconnect = time.Since(t)
	hello := p.Hello
	hello.UnixNano = time.Now().UnixNano()
	if _, err := client.Hello(ctx, hello); err != nil {
		return nil, fmt.Errorf("hello to the resumed agent: %w", err)
	}
	r.hello = time.Since(t) - r.reconnect
	// As the supervisor does after every resume: clock, entropy (and for a
	// fork a new name; the floor keeps the old one).
	t1 = time.Now()
	if err := client.Resumed(ctx, channel.ResumedRequest{}); err != nil {
		return nil, fmt.Errorf("resumed request to the floor VM's agent: %w", err)
	}
	r.resumed = time.Since(t1)
	execTrue := func() error {
		es, err := client.Exec(ctx, channel.ExecRequest{Argv: []string{"true"}}, nil, io.Discard, io.Discard)
		if err == nil && es.Code != 0 {
			err = fmt.Errorf("exit %+v", es)
		}
		if err != nil {
			return fmt.Errorf("exec true in the resumed floor VM: %w", err)
		}
		return nil
	}
	if err := execTrue(); err != nil {
		return nil, err
	}
	r.exec = time.Since(t)
	if v, err := procCPU(m.PID()); err == nil && cpu.vmmOK {
		r.execCPU = v - cpu.vmm0
	} else {
		r.execCPU = -1
	}
	t = time.Now()
	if err := execTrue(); err != nil {
		return nil, err
	}
	r.exec2 = time.Since(t)
	return r, nil
}

// forkTimes is one fork to exec-ready.
type forkTimes struct {
	call, start, boot, exec, total time.Duration
	// exec2 is a second exec true right after (not in total): the
	// steady state, against which exec shows the first one's extra.
	exec2 time.Duration
}

// execAgain times one more exec true in the workspace.
func execAgain(ctx context.Context, e *env, name string) (time.Duration, error) {
	t := time.Now()
	err := e.libExecTrue(ctx, name)
	return time.Since(t), err
}

// forkRound forks the source's base snapshot into a new workspace, starts
// it, runs exec true in it, then deletes it.
func forkRound(ctx context.Context, e *env, source, name string) (*forkTimes, error) {
	defer workspace.Delete(context.WithoutCancel(ctx), e.h, workspace.DeleteOptions{Name: name, Force: true})
	r := &forkTimes{}
	t := time.Now()
	if _, err := workspace.Fork(ctx, e.h, workspace.ForkOptions{Name: name, Source: source, Tag: snapBaseTag}); err != nil {
		return nil, fmt.Errorf("fork %s:%s into %s: %w", source, snapBaseTag, name, err)
	}
	r.call = time.Since(t)
	t1 := time.Now()
	inf, err := e.start(ctx, name)
	if err != nil {
		return nil, err
	}
	r.start = time.Since(t1)
	r.boot = time.Duration(inf.BootSeconds * float64(time.Second))
	t1 = time.Now()
	if err := e.libExecTrue(ctx, name); err != nil {
		return nil, err
	}
	r.exec = time.Since(t1)
	r.total = time.Since(t)
	if r.exec2, err = execAgain(ctx, e, name); err != nil {
		return nil, err
	}
	return r, nil
}

// restoreRound restores the halted source from its base snapshot and runs
// exec true in it; the source is left running.
func restoreRound(ctx context.Context, e *env, name string) (*forkTimes, error) {
	r := &forkTimes{}
	t := time.Now()
	inf, err := workspace.Start(ctx, e.h, workspace.StartOptions{Name: name, Executable: e.exe, Agent: e.agent, FromSnapshot: snapBaseTag})
	if err != nil {
		return nil, fmt.Errorf("start %s from snapshot %s: %w", name, snapBaseTag, err)
	}
	if inf.State != workspace.Running {
		return nil, fmt.Errorf("start %s from snapshot %s: state %s (%s)", name, snapBaseTag, inf.State, inf.Reason)
	}
	r.start = time.Since(t)
	r.boot = time.Duration(inf.BootSeconds * float64(time.Second))
	t1 := time.Now()
	if err := e.libExecTrue(ctx, name); err != nil {
		return nil, err
	}
	r.exec = time.Since(t1)
	r.total = time.Since(t)
	if r.exec2, err = execAgain(ctx, e, name); err != nil {
		return nil, err
	}
	return r, nil
}
