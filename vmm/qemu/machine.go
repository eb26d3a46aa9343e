package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/usernet"
)

const (
	// stderrKeep bounds the QEMU stderr kept in memory.
	stderrKeep = 16 << 10
	// stderrLines is how many trailing stderr lines go into errors.
	stderrLines = 20
	// reapTimeout bounds the wait for a process we have just SIGKILLed.
	reapTimeout = 10 * time.Second
)

// QMPSocketName is the QMP socket's file name inside RuntimeDir.
const QMPSocketName = "qmp.sock"

// agentSocketName is the agent channel socket's file name inside
// RuntimeDir (as long as QMPSocketName, so one length check covers both).
const agentSocketName = "ch.sock"

// maxSocketPath is the longest path a UNIX socket can bind to.
const maxSocketPath = 107

// Machine is a running QEMU process. It implements vmm.Machine.
type Machine struct {
	cmd     *exec.Cmd
	pid     int
	args    []string
	accel   string
	devices string // see devices
	qmpPath string
	mon     atomic.Pointer[Monitor] // set once the handshake is done
	stderr  *tailBuffer
	net     netProcess // the helper or passt; nil: slirp or no NIC
	netName string     // what serves the NIC (NetworkProvider)

	done    chan struct{}
	waitErr error // set before done is closed

	mu             sync.Mutex
	shutdownReason string
	agent          agentEnd // the agent channel's host end not yet handed out
	hasAgent       bool     // the machine has an agent port
}

var _ vmm.Machine = (*Machine)(nil)

// StartWith boots a machine with QEMU-specific settings (see
// MachineConfig). It returns once QEMU has answered on QMP, that is once it
// has parsed its command line, loaded the kernel and started the guest (or,
// with Incoming, is waiting for the migration stream). ctx bounds the start
// only; the machine outlives it.
func (b *Backend) StartWith(ctx context.Context, mc MachineConfig) (*Machine, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("qemu: start: %w", err)
	}
	mc.Disks = append([]vmm.Disk(nil), mc.Disks...) // validate fills defaults in place
	if err := validate(&mc); err != nil {
		return nil, err
	}
	bin, err := b.lookBinary()
	if err != nil {
		return nil, err
	}
	if err := mc.Network.CheckUserNetwork(b.UserNetwork()); err != nil {
		return nil, fmt.Errorf("qemu: network: %w", err)
	}
	accel, _, err := b.accel()
	if err != nil {
		return nil, err
	}
	l := launch{accel: accel, channelFD: -1, memoryFD: -1, streamFD: -1}
	if accel == AccelTCG {
		// Off amd64 there is no host TSC to pass on; boot without it.
		l.tscKHz, _ = HostTSCkHz()
	}

	cleanup := func() {}
	runDir := mc.RuntimeDir
	if runDir == "" {
		if runDir, err = os.MkdirTemp("", "microagent-qemu-"); err != nil {
			return nil, fmt.Errorf("qemu: creating a runtime directory: %w", err)
		}
		cleanup = func() { os.RemoveAll(runDir) }
	} else if err := os.MkdirAll(runDir, 0o700); err != nil {
		return nil, fmt.Errorf("qemu: creating runtime directory %s: %w", runDir, err)
	}
	m, err := b.launch(ctx, bin, &mc, l, runDir, cleanup)
	if err != nil {
		cleanup()
		return nil, err
	}
	return m, nil
}

// launch prepares files and sockets, runs QEMU and completes the QMP
// handshake.
func (b *Backend) launch(ctx context.Context, bin string, mc *MachineConfig, l launch, runDir string, cleanup func()) (*Machine, error) {
	// One check for both sockets (the QMP one and the agent's), whose
	// names are as long.
	if n := len(filepath.Join(runDir, agentSocketName)); n > maxSocketPath {
		return nil, fmt.Errorf("runtime directory %s is too long for a UNIX socket path (%d > %d bytes): use a shorter state directory",
			runDir, n, maxSocketPath)
	}
	if mc.SerialLog != "" {
		// Created here so it is 0600 (QEMU would create it 0644) and empty.
		if err := createPrivate(mc.SerialLog, true); err != nil {
			return nil, fmt.Errorf("qemu: serial log: %w", err)
		}
	}
	// QMP: we listen, QEMU inherits the listening socket and we connect at
	// once. The connection waits in the backlog until QEMU accepts it, so
	// there is no sleep and no poll for a socket file to appear.
	qmpPath := filepath.Join(runDir, QMPSocketName)
	if err := removeStaleSocket(qmpPath); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: qmpPath, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("qemu: listening on QMP socket: %w", err)
	}
	ln.SetUnlinkOnClose(false) // QEMU keeps listening on it after we close our copy
	lnFile, err := ln.File()
	ln.Close()
	if err != nil {
		os.Remove(qmpPath)
		return nil, fmt.Errorf("qemu: QMP socket: %w", err)
	}
	// Our copy must be closed once QEMU has its own, so that a QEMU that
	// dies resets our pending connection instead of leaving it hanging.
	defer lnFile.Close()

	var agent agentEnd
	var agentFile *os.File
	if mc.ChannelName != "" {
		if agent, agentFile, err = listenAgent(filepath.Join(runDir, agentSocketName), mc.Incoming); err != nil {
			return nil, err
		}
		// As with QMP: once QEMU has its copy, ours must go, so that a
		// QEMU that dies resets the connection made in advance.
		defer agentFile.Close()
	}

	// The network first: it must be ready before QEMU connects, and its
	// failure (a published port taken, say) is a clear start error.
	netProc, netFile, err := b.startNetwork(mc)
	if err != nil {
		agent.close()
		return nil, err
	}
	if netProc != nil {
		// QEMU holds its own copy once started; ours must go so that
		// QEMU's exit is what closes the socket and ends the network.
		defer netFile.Close()
		cleanup = networkCleanup(netProc, cleanup)
	}

	netName := ""
	if !mc.Network.Isolated() {
		netName = b.UserNetwork().Provider
	}
	var extra []*os.File
	if netProc != nil {
		l.streamFD = 3 + len(extra)
		extra = append(extra, netFile)
	}
	if agentFile != nil {
		l.channelFD = 3 + len(extra)
		extra = append(extra, agentFile)
	}
	if mc.Memory != nil {
		l.memoryFD = 3 + len(extra)
		extra = append(extra, mc.Memory.File)
	}
	l.qmpFD = 3 + len(extra)
	extra = append(extra, lnFile)

	args := buildArgs(mc, l)
	cmd := exec.Command(bin, args...)
	cmd.Env = vmm.ChildEnv() // nothing of the caller's: no backend token, no secret value
	stderr := newTailBuffer(stderrKeep)
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	cmd.ExtraFiles = extra
	cmd.WaitDelay = 2 * time.Second // helpers QEMU spawns (exec: migration) may hold the pipe
	if mc.DieWithParent {
		// Stay in the caller's process group (Ctrl-C reaches QEMU) and die
		// with the caller.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	} else {
		// Own session: QEMU survives the caller and its terminal.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}

	m := &Machine{
		cmd:      cmd,
		args:     append([]string{bin}, args...),
		accel:    l.accel,
		devices:  devices(&mc.Config),
		qmpPath:  qmpPath,
		stderr:   stderr,
		net:      netProc,
		netName:  netName,
		done:     make(chan struct{}),
		agent:    agent,
		hasAgent: agentFile != nil,
	}
	started := make(chan error, 1)
	go m.run(mc.DieWithParent, started, func() {
		os.Remove(qmpPath)
		m.mu.Lock()
		m.agent.close()
		m.mu.Unlock()
		cleanup()
	})
	if err := <-started; err != nil {
		os.Remove(qmpPath)
		agent.close()
		if netProc != nil {
			netProc.Kill()
		}
		return nil, fmt.Errorf("qemu: starting %s: %w", bin, err)
	}
	m.pid = cmd.Process.Pid
	if netProc != nil {
		netFile.Close()
	}
	if agentFile != nil {
		agentFile.Close()
	}

	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: qmpPath, Net: "unix"})
	lnFile.Close()
	if err != nil {
		return nil, m.failStart(ctx, fmt.Errorf("connecting to QMP: %w", err))
	}
	// If QEMU exits during the handshake, the reset connection ends it.
	mon, err := newMonitor(ctx, conn, m.observe)
	if err != nil {
		return nil, m.failStart(ctx, err)
	}
	m.mon.Store(mon)
	return m, nil
}

// run starts QEMU and reaps it. With DieWithParent the goroutine keeps its
// OS thread until QEMU exits, because Linux sends Pdeathsig when the
// *thread* that forked the child exits, and the Go runtime may retire
// threads.
func (m *Machine) run(dieWithParent bool, started chan<- error, cleanup func()) {
	if dieWithParent {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	if err := m.cmd.Start(); err != nil {
		started <- err
		return
	}
	started <- nil
	err := m.cmd.Wait()
	if mon := m.mon.Load(); mon != nil {
		// QEMU's exit closed its end; let the reader drain what QEMU sent
		// last (the SHUTDOWN event) before Done fires.
		select {
		case <-mon.Done():
		case <-time.After(time.Second):
			mon.Close()
		}
	}
	m.waitErr = m.exitError(err)
	cleanup()
	close(m.done)
}

// exitError describes how QEMU ended; nil for exit status 0.
func (m *Machine) exitError(err error) error {
	if err == nil || errors.Is(err, exec.ErrWaitDelay) {
		// ErrWaitDelay: QEMU exited 0 but a helper it spawned still held
		// its stderr.
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		msg := fmt.Sprintf("qemu (pid %d) exited: %v", m.cmd.Process.Pid, ee)
		if tail := m.stderr.lastLines(stderrLines); tail != "" {
			msg += ": " + tail
		}
		return errors.New(msg)
	}
	return fmt.Errorf("qemu (pid %d): %w", m.cmd.Process.Pid, err)
}

// failStart kills a QEMU that did not come up and returns why it failed,
// with its stderr.
func (m *Machine) failStart(ctx context.Context, cause error) error {
	grace := 2 * time.Second
	if ctx.Err() != nil {
		grace = 0 // the caller gave up: no reason to wait
	}
	select {
	case <-m.done:
	case <-time.After(grace):
		// A reset QMP connection usually means QEMU is exiting with its own
		// error message; give it a moment, then kill it.
		m.cmd.Process.Kill()
		<-m.done
	}
	if ctx.Err() != nil {
		return fmt.Errorf("qemu: start: %w", ctx.Err())
	}
	if m.waitErr != nil {
		return fmt.Errorf("qemu exited during start: %w", m.waitErr)
	}
	msg := fmt.Sprintf("qemu: start failed: %v", cause)
	if tail := m.stderr.lastLines(stderrLines); tail != "" {
		msg += ": " + tail
	}
	return errors.New(msg)
}

// observe records the reason of QEMU's SHUTDOWN event.
func (m *Machine) observe(ev Event) {
	if ev.Event != "SHUTDOWN" {
		return
	}
	reason, _ := ev.Data["reason"].(string)
	m.mu.Lock()
	m.shutdownReason = reason
	m.mu.Unlock()
}

// networkCleanup wraps a machine's cleanup: once QEMU has exited, its end
// of the socket is closed and the network's process quits by itself; it
// is killed if it has not within a second.
func networkCleanup(p netProcess, cleanup func()) func() {
	return func() {
		select {
		case <-p.Done():
		case <-time.After(time.Second):
			p.Kill()
		}
		cleanup()
	}
}

// NetworkPID is the process id of the machine's network (the helper or
// passt), 0 when its network is slirp or it has no NIC. It ends with QEMU.
func (m *Machine) NetworkPID() int {
	if m.net == nil {
		return 0
	}
	return m.net.PID()
}

// NetworkProvider names what serves the guest's NIC: usernet.BinaryName,
// "passt", "slirp", or "" for no NIC.
func (m *Machine) NetworkProvider() string {
	return m.netName
}

// UpdateEgress implements vmm.EgressUpdater for the microagent-net
// network; passt, slirp and no NIC keep their policy (vmm.ErrEgressFixed).
func (m *Machine) UpdateEgress(ctx context.Context, n vmm.Network) error {
	u, ok := m.net.(*usernet.Process)
	if !ok {
		return fmt.Errorf("%w (its network is %q)", vmm.ErrEgressFixed, m.netName)
	}
	return u.UpdatePolicy(ctx, usernet.PolicyOf(&n))
}

// NetworkDone implements vmm.NetworkReporter: closed once the network's
// process has exited (nil for slirp and no NIC, which have none).
func (m *Machine) NetworkDone() <-chan struct{} {
	if m.net == nil {
		return nil
	}
	return m.net.Done()
}

// NetworkErr implements vmm.NetworkReporter: once NetworkDone is closed,
// nil when the network ended because QEMU closed its socket (the VM's
// end), else how it died; while the VM runs, that means the guest is
// offline.
func (m *Machine) NetworkErr() error {
	if m.net == nil {
		return nil
	}
	select {
	case <-m.net.Done():
		return m.net.Wait()
	default:
		return nil
	}
}

// PID implements vmm.Machine.
func (m *Machine) PID() int { return m.pid }

// Done implements vmm.Machine.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Wait implements vmm.Machine. It returns nil when QEMU exited with status
// 0 (guest power-off, reset with -no-reboot, or QMP quit; see
// ShutdownReason), otherwise an error with the exit status and the last
// lines of QEMU's stderr.
func (m *Machine) Wait() error {
	<-m.done
	return m.waitErr
}

// Shutdown implements vmm.Machine: it sends QMP "quit" and waits for QEMU
// to exit; when ctx ends first it kills QEMU and returns ctx's error.
func (m *Machine) Shutdown(ctx context.Context) error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if err := m.mon.Load().Execute(ctx, "quit", nil, nil); err != nil {
		select {
		case <-m.done: // QEMU may close QMP before its reply arrives
		default:
			if ctx.Err() == nil {
				// QMP is unusable: SIGTERM asks QEMU to quit the same way.
				m.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
	}
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		m.Kill()
		select {
		case <-m.done:
		case <-time.After(reapTimeout):
		}
		return fmt.Errorf("qemu (pid %d) did not quit in time, killed: %w", m.pid, ctx.Err())
	}
}

// Kill implements vmm.Machine: SIGKILL, then it waits for QEMU to be reaped
// (bounded).
func (m *Machine) Kill() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if err := m.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing qemu (pid %d): %w", m.pid, err)
	}
	select {
	case <-m.done:
		return nil
	case <-time.After(reapTimeout):
		return fmt.Errorf("qemu (pid %d) was sent SIGKILL but has not exited after %v", m.pid, reapTimeout)
	}
}

// QMP runs a QMP command (args nil or encoding to a JSON object) and
// decodes its "return" value into out (nil to ignore it). A command QEMU
// rejects yields an *Error.
func (m *Machine) QMP(ctx context.Context, cmd string, args any, out any) error {
	return m.mon.Load().Execute(ctx, cmd, args, out)
}

// Monitor returns the machine's QMP connection.
func (m *Machine) Monitor() *Monitor { return m.mon.Load() }

// Events subscribes to QMP events; see Monitor.Subscribe.
func (m *Machine) Events() (<-chan Event, func()) { return m.mon.Load().Subscribe() }

// ShutdownReason implements vmm.ShutdownReasoner: the reason of the last
// QMP SHUTDOWN event, such as "guest-shutdown" (power-off), "guest-reset"
// (reboot or panic, which -no-reboot turns into an exit), "host-qmp-quit"
// or "host-signal"; empty if none was seen. QEMU's words are the
// vmm.Reason constants.
func (m *Machine) ShutdownReason() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.shutdownReason
}

// agentEnd is the host end of the agent's virtio-serial port that the
// machine has not handed out yet: a connection made before QEMU started
// (a booting machine), or the socket path to connect to (Incoming).
type agentEnd struct {
	conn net.Conn
	path string
}

// close drops what was not handed out: the connection is closed and the
// socket path removed.
func (a *agentEnd) close() {
	if a.conn != nil {
		a.conn.Close()
	}
	if a.path != "" {
		os.Remove(a.path)
	}
	*a = agentEnd{}
}

// listenAgent makes the listening socket QEMU serves the agent's port on
// and returns QEMU's copy of it. A booting machine is connected at once:
// the connection waits in the backlog until QEMU accepts it, so there is
// no wait for a socket file to appear, and the path is removed at once, so
// no one else can reach the agent through it. With incoming the path stays
// until DialAgent: the restored guest must first see its old host end gone.
func listenAgent(path string, incoming bool) (agentEnd, *os.File, error) {
	os.Remove(path) // left by an earlier QEMU in this runtime directory
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return agentEnd{}, nil, fmt.Errorf("qemu: channel socket: %w", err)
	}
	var a agentEnd
	if incoming {
		l.SetUnlinkOnClose(false)
		a.path = path
	} else if a.conn, err = net.Dial("unix", path); err != nil {
		l.Close()
		return agentEnd{}, nil, fmt.Errorf("qemu: channel socket: %w", err)
	}
	f, err := l.File()
	l.Close()
	if err != nil {
		a.close()
		return agentEnd{}, nil, fmt.Errorf("qemu: channel socket: %w", err)
	}
	return a, f, nil
}

// DialAgent implements vmm.Machine. QEMU's virtio-serial port has one
// host end, so a machine gives out one connection: a booting machine's
// was made before QEMU started; a machine started with Incoming connects
// now (call it after Resume), and its socket path is removed then.
func (m *Machine) DialAgent(ctx context.Context) (net.Conn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case !m.hasAgent:
		return nil, fmt.Errorf("qemu (pid %d): the machine has no agent port: set Config.ChannelName", m.pid)
	case m.agent.conn != nil:
		c := m.agent.conn
		m.agent.conn = nil
		return c, nil
	case m.agent.path != "":
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", m.agent.path)
		if err != nil {
			return nil, fmt.Errorf("qemu (pid %d): channel socket: %w", m.pid, err)
		}
		m.agent.close()
		return c, nil
	}
	select {
	case <-m.done:
		return nil, fmt.Errorf("qemu (pid %d) has exited: no agent channel", m.pid)
	default:
	}
	return nil, fmt.Errorf("qemu (pid %d): the agent channel was handed out already: its virtio-serial port has one host end", m.pid)
}

// Args returns the full QEMU command line, program first.
func (m *Machine) Args() []string { return append([]string(nil), m.args...) }

// Accel returns the accelerator in use ("kvm" or "tcg").
func (m *Machine) Accel() string { return m.accel }

// Identity implements vmm.IdentityReporter: the identity Backend.Identity
// gave the machine's Config, with the accelerator it really runs on.
func (m *Machine) Identity() vmm.Identity {
	return vmm.Identity{Backend: BackendName, Accel: m.accel, CPU: cpuModel(m.accel), Devices: m.devices}
}

// QMPSocket returns the path of the QMP socket. QEMU serves one client at
// a time; connect after closing Monitor (DialMonitor).
func (m *Machine) QMPSocket() string { return m.qmpPath }

// removeStaleSocket removes a socket file left by an earlier QEMU, but
// refuses when a QEMU still listens on it (two machines sharing one
// RuntimeDir would break each other's sockets).
func removeStaleSocket(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("qemu: %s is in use by a running QEMU: stop it or use another runtime directory", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("qemu: removing stale QMP socket: %w", err)
	}
	return nil
}

// createPrivate makes sure path exists, creating it 0600 when missing.
// With truncate an existing file is emptied; without, it is left alone
// (a RAM snapshot must not be touched).
func createPrivate(path string, truncate bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if !truncate {
		flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		if !truncate && errors.Is(err, os.ErrExist) {
			return nil
		}
		return err
	}
	return f.Close()
}
