//go:build linux

package guest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/channel"
)

// machineIDPath is the image's machine id, rewritten for a fork.
const machineIDPath = "/etc/machine-id"

// sysOps are the system calls OpResumed makes. Tests replace them, so the
// handler can run on a host without changing the host's clock or name.
type sysOps interface {
	setClock(unixNano int64) error
	addEntropy(b []byte) error
	reseed() error
	setHostname(name string) error
	// writeMachineID rewrites path if it exists; it reports whether it did.
	writeMachineID(path, id string) (bool, error)
}

// realSys is the guest's kernel.
type realSys struct{}

func (realSys) setClock(unixNano int64) error {
	tv := unix.NsecToTimeval(unixNano)
	return unix.Settimeofday(&tv)
}

// randPoolInfo is struct rand_pool_info with a fixed buffer.
type randPoolInfo struct {
	entropyCount int32 // bits credited
	bufSize      int32 // bytes in buf
	buf          [channel.ResumedEntropy]byte
}

// addEntropy mixes b into the kernel's pool and credits it (RNDADDENTROPY,
// which needs CAP_SYS_ADMIN: PID 1 has it). b comes from the host's CSPRNG,
// so crediting 8 bits per byte is honest.
func (realSys) addEntropy(b []byte) error {
	if len(b) > channel.ResumedEntropy {
		return fmt.Errorf("%d bytes of entropy, at most %d", len(b), channel.ResumedEntropy)
	}
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	info := randPoolInfo{entropyCount: int32(8 * len(b)), bufSize: int32(len(b))}
	copy(info.buf[:], b)
	defer clear(info.buf[:])
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info))); e != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", e)
	}
	return nil
}

// reseed makes the kernel's CRNG take a new key from the pool at once
// (RNDRESEEDCRNG): without it a restored or forked guest would keep
// producing the same stream as its siblings until the next timed reseed.
func (realSys) reseed() error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); e != 0 {
		return fmt.Errorf("RNDRESEEDCRNG: %w", e)
	}
	return nil
}

func (realSys) setHostname(name string) error { return unix.Sethostname([]byte(name)) }

func (realSys) writeMachineID(path, id string) (bool, error) {
	// Some images link /etc/machine-id elsewhere (/run, /var/lib/dbus):
	// rewrite the file it names, keeping the link.
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	}
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // the image has none: nothing identifies the guest
	}
	if err != nil {
		return false, err
	}
	// Same directory, then rename: a reader never sees a half id.
	tmp := path + ".microagent-tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), fi.Mode().Perm()); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return false, err
	}
	return true, nil
}

func (a *Agent) system() sysOps {
	if a.sys != nil {
		return a.sys
	}
	return realSys{}
}

// resumed handles OpResumed. Every step is tried; any failure is reported,
// since a guest with a stale clock or a shared random state must not be
// passed off as fresh.
func (a *Agent) resumed(req *channel.ResumedRequest) channel.Reply {
	if req == nil {
		return channel.Reply{Error: "resumed without a request"}
	}
	defer clear(req.Entropy)
	if err := req.Validate(); err != nil {
		return channel.ErrorReply(err)
	}
	s := a.system()
	var failed []string
	if err := s.setClock(req.UnixNano); err != nil {
		failed = append(failed, "set clock: "+err.Error())
	}
	// Add, then reseed: the new key is drawn from a pool that now holds
	// the host's bytes, which no sibling fork shares.
	if err := s.addEntropy(req.Entropy); err != nil {
		failed = append(failed, "add entropy: "+err.Error())
	} else if err := s.reseed(); err != nil {
		failed = append(failed, "reseed: "+err.Error())
	}
	if req.Hostname != "" {
		if err := s.setHostname(req.Hostname); err != nil {
			failed = append(failed, "set hostname: "+err.Error())
		} else {
			a.mu.Lock()
			a.cfg.Hostname = req.Hostname
			a.mu.Unlock()
		}
	}
	if req.MachineID != "" {
		if _, err := s.writeMachineID(machineIDPath, req.MachineID); err != nil {
			failed = append(failed, "write "+machineIDPath+": "+err.Error())
		}
	}
	if len(failed) > 0 {
		logf("resumed: %s", strings.Join(failed, "; "))
		return channel.Reply{Error: strings.Join(failed, "; ")}
	}
	return channel.Reply{}
}
