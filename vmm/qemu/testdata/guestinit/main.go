// Command guestinit is the /init of the tiny test guest used by package
// qemu's tests: it loads the virtio modules, reports the first bytes of
// each disk on the serial console, prints a marker, and echoes whatever
// arrives on the virtio-serial port named by "testport=" on the kernel
// command line. A line "poweroff" powers the guest off instead.
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

var modules = []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_console", "virtio_blk"}

func main() {
	unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	unix.Mount("proc", "/proc", "proc", 0, "")
	unix.Mount("sysfs", "/sys", "sysfs", 0, "")
	console, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		console = os.Stderr
	}
	fail := func(format string, a ...any) {
		fmt.Fprintf(console, "GUEST_FAIL "+format+"\n", a...)
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
	for _, m := range modules {
		f, err := os.Open("/lib/modules/" + m + ".ko")
		if err != nil {
			fail("%v", err)
		}
		if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
			fail("loading %s: %v", m, err)
		}
		f.Close()
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	name := "test"
	for _, w := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(w, "testport="); ok {
			name = v
		}
	}
	// Device probing is asynchronous: poll briefly for the port and disks.
	var port string
	for i := 0; i < 500 && port == ""; i++ {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, n := range names {
			b, _ := os.ReadFile(n)
			if strings.TrimSpace(string(b)) == name {
				port = "/dev/" + filepath.Base(filepath.Dir(n))
			}
		}
		if port == "" {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if port == "" {
		fail("no virtio port named %q", name)
	}
	for _, d := range []string{"vda", "vdb"} {
		if b, err := os.ReadFile("/sys/block/" + d + "/ro"); err == nil {
			head := make([]byte, 16)
			f, err := os.Open("/dev/" + d)
			if err == nil {
				f.Read(head)
				f.Close()
			}
			fmt.Fprintf(console, "GUEST_DISK %s ro=%s %s\n", d, strings.TrimSpace(string(b)), bytes.TrimRight(head, "\x00"))
		}
	}
	p, err := os.OpenFile(port, os.O_RDWR, 0)
	if err != nil {
		fail("opening %s: %v", port, err)
	}
	fmt.Fprintf(console, "GUEST_READY %s\n", port)
	buf := make([]byte, 64<<10)
	for {
		n, err := p.Read(buf)
		if n == 0 || err != nil {
			// No host connected: reads return EOF until one is.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if string(buf[:n]) == "poweroff\n" {
			unix.Sync()
			unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		}
		if _, err := p.Write(buf[:n]); err != nil {
			fail("writing %s: %v", port, err)
		}
	}
}
