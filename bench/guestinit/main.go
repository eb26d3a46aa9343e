//go:build linux

// Command guestinit is the /init of the benchmark's floor VMs: the least a
// guest can do, to compare microagent's agent against.
//
// Its mode comes from the kernel command line ("benchmode=...", which the
// kernel hands to init as an environment variable):
//
//   - default: print "BENCH_INIT boottime_ns=N" on the console and power off
//     at once (the raw boot floor).
//   - "echo": load the modules listed in /lib/modules/order, find the
//     virtio-serial port named by "benchport=", print "BENCH_PORT
//     boottime_ns=N modules_ns=M" and echo every byte it reads (the raw
//     channel floor: no protocol, no process spawn).
//   - "net": load the modules, give eth0 the user-mode network's guest
//     address with ioctls (no agent, no netlink), serve netpeer transfers
//     on netpeer.Port and print "BENCH_NET ready" (the raw network floor).
//
// boottime_ns is CLOCK_BOOTTIME when /init started, i.e. how long the guest
// kernel took to reach /init.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	start := boottime()
	switch os.Getenv("benchmode") {
	case "echo":
		echo(start)
	case "net":
		netFloor()
	default:
		fmt.Printf("BENCH_INIT boottime_ns=%d\n", start)
		powerOff()
	}
}

// boottime is the guest kernel's uptime in nanoseconds.
func boottime() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return -1
	}
	return ts.Nano()
}

// powerOff waits for the console to drain (so the host sees every line) and
// powers the VM off; QEMU then exits.
func powerOff() {
	_ = unix.IoctlSetInt(1, unix.TCSBRK, 1) // tcdrain
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		// With -no-reboot a reset ends QEMU too.
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	}
	select {}
}

func fail(format string, a ...any) {
	fmt.Printf("BENCH_FAIL "+format+"\n", a...)
	powerOff()
}

func echo(start int64) {
	for _, m := range [][3]string{{"devtmpfs", "/dev", "devtmpfs"}, {"sysfs", "/sys", "sysfs"}} {
		if err := unix.Mount(m[0], m[1], m[2], 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			fail("mount %s: %v", m[1], err)
		}
	}
	if err := loadModules("/lib/modules/order"); err != nil {
		fail("%v", err)
	}
	modules := boottime()
	name := os.Getenv("benchport")
	port, err := findPort(name, 10*time.Second)
	if err != nil {
		fail("%v", err)
	}
	f, err := os.OpenFile(port, os.O_RDWR, 0)
	if err != nil {
		fail("open %s: %v", port, err)
	}
	fmt.Printf("BENCH_PORT boottime_ns=%d modules_ns=%d port_ns=%d\n", start, modules, boottime())
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := f.Write(buf[:n]); werr != nil {
				fail("write %s: %v", port, werr)
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			fail("read %s: %v", port, err)
		}
		// No host connected yet: the port reads EOF until one is, and
		// offers no event for it.
		time.Sleep(2 * time.Millisecond)
	}
}

// loadModules loads the modules of the order file, in order.
func loadModules(order string) error {
	of, err := os.Open(order)
	if err != nil {
		return err
	}
	defer of.Close()
	sc := bufio.NewScanner(of)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" {
			continue
		}
		f, err := os.Open(filepath.Join(filepath.Dir(order), name))
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("load %s: %w", name, err)
		}
	}
	return sc.Err()
}

// findPort polls sysfs for the named port (device probing is asynchronous).
func findPort(name string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for delay := 500 * time.Microsecond; ; delay = min(delay*2, 20*time.Millisecond) {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err == nil && strings.TrimSpace(string(b)) == name {
				dev := "/dev/" + filepath.Base(filepath.Dir(n))
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no virtio port named %q within %s", name, limit)
		}
		time.Sleep(delay)
	}
}
