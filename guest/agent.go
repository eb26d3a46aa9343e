//go:build linux

// Package guest is the microagent guest agent: PID 1 of the microVM's
// initramfs. It loads the kernel modules the VM needs, assembles the root
// filesystem from the image's disk and the writable disk, and then serves the
// host over the virtio-serial channel (package channel): it runs processes,
// reaps orphans and syncs disks before power-off.
package guest

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/channel"
)

// Agent is the running guest agent.
type Agent struct {
	reaper  *reaper
	bootErr string
	started time.Time
	// sys makes OpResumed's system calls; nil is the real kernel.
	sys sysOps

	mu      sync.Mutex
	cfg     channel.HelloRequest
	sess    *yamux.Session
	secrets secretsState
	net     netState
}

// logf writes to the serial console, which the host keeps as the VM's log.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "microagent-agent: "+format+"\n", args...)
}

// Main runs the agent; it never returns.
func Main() {
	unix.Umask(0o022)
	a := newAgent()
	if err := a.boot(); err != nil {
		// The agent still serves the channel so the host learns the cause.
		a.bootErr = err.Error()
		logf("boot failed: %v", err)
	}
	a.serve()
}

func newAgent() *Agent {
	return &Agent{started: time.Now(), reaper: newReaper(), secrets: secretsState{dir: SecretsDir, sock: SecretsSock}}
}

func (a *Agent) boot() error {
	if os.Getpid() != 1 {
		return fmt.Errorf("the agent must run as PID 1 (it is %d)", os.Getpid())
	}
	for _, m := range earlyMounts {
		if err := m.do(); err != nil {
			return err
		}
	}
	if err := loadModules(); err != nil {
		return err
	}
	return mountRoot()
}

func (a *Agent) config() channel.HelloRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// findPort returns the device node of the agent's virtio-serial port.
func findPort() (string, error) {
	var dev string
	err := pollUntil(10*time.Second, func() bool {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err == nil && strings.TrimSpace(string(b)) == channel.PortName {
				dev = "/dev/" + filepath.Base(filepath.Dir(n))
				return true
			}
		}
		return false
	})
	if err != nil {
		return "", fmt.Errorf("virtio port %q: %w", channel.PortName, err)
	}
	return dev, waitFor(dev, 5*time.Second)
}

func pollUntil(limit time.Duration, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for delay := 500 * time.Microsecond; !ok(); delay = min(delay*2, 20*time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %s", limit)
		}
		time.Sleep(delay)
	}
	return nil
}

// serve accepts host sessions forever. While the host is not connected the
// port reads EOF; the agent retries on a short timer (the port offers no
// event for "host connected").
func (a *Agent) serve() {
	dev, err := findPort()
	if err != nil {
		logf("%v; powering off", err)
		unix.Sync()
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		select {}
	}
	for {
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			logf("open %s: %v", dev, err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for {
			err = channel.GuestHandshake(f)
			if err != io.EOF {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			logf("handshake: %v", err)
			f.Close()
			continue
		}
		a.serveSession(f)
	}
}

// serveSession runs one yamux session over conn until the host goes away,
// then closes conn.
func (a *Agent) serveSession(conn io.ReadWriteCloser) {
	defer conn.Close()
	sess, err := yamux.Server(conn, channel.YamuxConfig())
	if err != nil {
		logf("session: %v", err)
		return
	}
	defer sess.Close()
	a.mu.Lock()
	a.sess = sess
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		if a.sess == sess {
			a.sess = nil
		}
		a.mu.Unlock()
	}()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		go a.handle(st)
	}
}

// ops serve the host's operations, one stream each; the handler answers
// on the stream, which handle closes.
var ops = map[string]func(*Agent, *yamux.Stream, *channel.Header){
	channel.OpExec: func(a *Agent, st *yamux.Stream, h *channel.Header) {
		if h.Exec == nil {
			channel.WriteJSON(st, channel.FrameReply, channel.Reply{Error: "exec without a request"})
			return
		}
		a.runExec(st, h.Exec)
	},
	channel.OpHello: func(a *Agent, st *yamux.Stream, h *channel.Header) {
		channel.WriteJSON(st, channel.FrameReply, a.hello(h.Hello))
	},
	channel.OpSecrets: func(a *Agent, st *yamux.Stream, h *channel.Header) {
		if h.Secrets == nil {
			channel.WriteJSON(st, channel.FrameReply, channel.Reply{Error: "secrets without a request"})
			return
		}
		channel.WriteJSON(st, channel.FrameReply, a.materialize(st, h.Secrets))
	},
	channel.OpPurge: func(a *Agent, st *yamux.Stream, _ *channel.Header) {
		channel.WriteJSON(st, channel.FrameReply, a.purge())
	},
	channel.OpResumed: func(a *Agent, st *yamux.Stream, h *channel.Header) {
		channel.WriteJSON(st, channel.FrameReply, a.resumed(h.Resumed))
	},
	channel.OpShutdown: func(a *Agent, st *yamux.Stream, _ *channel.Header) {
		channel.WriteJSON(st, channel.FrameReply, a.shutdown())
	},
	channel.OpCopyIn:      copyOp,
	channel.OpCopyOut:     copyOp,
	channel.OpPortForward: (*Agent).portForward,
}

func copyOp(a *Agent, st *yamux.Stream, h *channel.Header) { a.copyFiles(st, h) }

func (a *Agent) handle(st *yamux.Stream) {
	defer st.Close()
	var h channel.Header
	if err := channel.ReadJSON(st, channel.FrameHeader, &h); err != nil {
		return
	}
	op, ok := ops[h.Op]
	if !ok {
		channel.WriteJSON(st, channel.FrameReply, channel.Reply{Error: fmt.Sprintf("unknown operation %q", h.Op)})
		return
	}
	op(a, st, &h)
}

func (a *Agent) hello(req *channel.HelloRequest) channel.Reply {
	if req == nil {
		return channel.Reply{Error: "hello without a request"}
	}
	if req.UnixNano > 0 {
		tv := unix.NsecToTimeval(req.UnixNano)
		if err := unix.Settimeofday(&tv); err != nil {
			logf("set clock: %v", err)
		}
	}
	if req.Hostname != "" {
		if err := unix.Sethostname([]byte(req.Hostname)); err != nil {
			logf("set hostname: %v", err)
		}
	}
	if req.Network != nil {
		if err := a.applyNetwork(req.Network); err != nil {
			logf("network: %v", err)
			return channel.Reply{Error: "network setup failed: " + err.Error()}
		}
	}
	a.mu.Lock()
	a.cfg = *req
	a.mu.Unlock()
	return channel.Reply{Hello: &channel.HelloReply{
		Version:   channel.Version,
		BootError: a.bootErr,
		Uptime:    time.Since(a.started),
	}}
}

// shutdown stops every process (TERM, then KILL after a grace period) and
// flushes the disks, so the host can power the VM off.
func (a *Agent) shutdown() channel.Reply {
	unix.Kill(-1, unix.SIGTERM)
	if pollUntil(2*time.Second, a.reaper.reap) != nil {
		unix.Kill(-1, unix.SIGKILL)
		pollUntil(2*time.Second, a.reaper.reap)
	}
	unix.Sync()
	return channel.Reply{}
}
