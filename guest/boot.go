//go:build linux

package guest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Disks as the host attaches them: the image's read-only root, then the
// workspace's writable layer.
const (
	baseDisk     = "/dev/vda"
	writableDisk = "/dev/vdb"
)

// mountSpec is one mount the agent makes.
type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	mode                   os.FileMode
}

func (m mountSpec) do() error {
	if err := os.MkdirAll(m.target, m.mode); err != nil {
		return fmt.Errorf("mkdir %s: %w", m.target, err)
	}
	if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		return fmt.Errorf("mount %s on %s (%s): %w", m.source, m.target, m.fstype, err)
	}
	return nil
}

// earlyMounts gives the initramfs what module loading and device discovery need.
var earlyMounts = []mountSpec{
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755},
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
}

// loadModules loads the modules listed, in order, in /lib/modules/order.
func loadModules() error {
	f, err := os.Open("/lib/modules/order")
	if errors.Is(err, os.ErrNotExist) {
		return nil // a kernel with everything built in
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" {
			continue
		}
		if err := loadModule(filepath.Join("/lib/modules", name)); err != nil {
			return err
		}
	}
	return sc.Err()
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", filepath.Base(path), err)
	}
	return nil
}

// waitFor polls for a path that a driver creates asynchronously. Device
// probing normally completes inside the module load, so the first look
// usually succeeds; the bound turns a missing device into an error.
func waitFor(path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for delay := 500 * time.Microsecond; ; delay = min(delay*2, 20*time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s", path, limit)
		}
		time.Sleep(delay)
	}
}

// mountRoot assembles the root filesystem at /newroot: the image's read-only
// ext4 as the lower layer of an overlay whose upper layer lives on the
// writable disk, then moves it to / (as switch_root does: the initramfs
// cannot be pivoted away).
func mountRoot() error {
	if err := waitFor(baseDisk, 10*time.Second); err != nil {
		return fmt.Errorf("root disk: %w", err)
	}
	if err := waitFor(writableDisk, 10*time.Second); err != nil {
		return fmt.Errorf("writable disk: %w", err)
	}
	steps := []mountSpec{
		{baseDisk, "/mnt/base", "ext4", unix.MS_RDONLY, "", 0o755},
		{writableDisk, "/mnt/rw", "ext4", unix.MS_NOATIME, "", 0o755},
	}
	for _, m := range steps {
		if err := m.do(); err != nil {
			return err
		}
	}
	for _, d := range []string{"/mnt/rw/upper", "/mnt/rw/work"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	ov := mountSpec{"overlay", "/newroot", "overlay", 0,
		"lowerdir=/mnt/base,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work", 0o755}
	if err := ov.do(); err != nil {
		return err
	}
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		t := "/newroot" + d
		if err := os.MkdirAll(t, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", t, err)
		}
		if err := unix.Mount(d, t, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s into the root: %w", d, err)
		}
	}
	if err := os.Chdir("/newroot"); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the root to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	return setupRoot()
}

// setupRoot makes the mounts and device links that programs expect.
func setupRoot() error {
	mounts := []mountSpec{
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "ptmxmode=0666,mode=0620,gid=5", 0o755},
		{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", 0o755},
	}
	for _, m := range mounts {
		if err := m.do(); err != nil {
			return err
		}
	}
	links := map[string]string{
		"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2",
	}
	for name, target := range links {
		if err := os.Symlink(target, name); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("link %s: %w", name, err)
		}
	}
	// /dev/ptmx must reach the devpts instance mounted above.
	os.Remove("/dev/ptmx")
	if err := os.Symlink("pts/ptmx", "/dev/ptmx"); err != nil {
		return fmt.Errorf("link /dev/ptmx: %w", err)
	}
	if fi, err := os.Stat("/tmp"); errors.Is(err, os.ErrNotExist) {
		// unix calls, not os: Go's FileMode has no octal sticky bit.
		if err := unix.Mkdir("/tmp", 0o1777); err != nil {
			return fmt.Errorf("mkdir /tmp: %w", err)
		}
		if err := unix.Chmod("/tmp", 0o1777); err != nil {
			return fmt.Errorf("chmod /tmp: %w", err)
		}
	} else if err != nil {
		return err
	} else if !fi.IsDir() {
		return errors.New("/tmp in the image is not a directory")
	}
	return loopbackUp()
}

// loopbackUp brings up lo, which local servers and clients rely on.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}
