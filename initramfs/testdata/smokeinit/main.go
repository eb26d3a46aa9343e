// Command smokeinit is a stand-in guest agent for the initramfs boot test:
// as /init it loads the modules listed in /lib/modules/order, prints a
// marker on the console and reboots (which ends QEMU under -no-reboot).
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	fmt.Println("SMOKE_INIT_STARTED")
	order, err := os.ReadFile("/lib/modules/order")
	if err != nil {
		fail("read order: %v", err)
	}
	var loaded []string
	for _, name := range strings.Fields(string(order)) {
		f, err := os.Open("/lib/modules/" + name)
		if err != nil {
			fail("open %s: %v", name, err)
		}
		if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
			fail("load %s: %v", name, err)
		}
		f.Close()
		loaded = append(loaded, strings.TrimSuffix(name, ".ko"))
	}
	var st unix.Stat_t
	if err := unix.Stat("/dev/console", &st); err != nil {
		fail("stat /dev/console: %v", err)
	}
	fmt.Printf("SMOKE_MODULES_LOADED %s console=%d,%d\n", strings.Join(loaded, ","), unix.Major(st.Rdev), unix.Minor(st.Rdev))
	if err := os.MkdirAll("/sys", 0o755); err == nil {
		if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err == nil {
			if drv, err := os.ReadDir("/sys/bus/virtio/drivers"); err == nil {
				var names []string
				for _, d := range drv {
					names = append(names, d.Name())
				}
				fmt.Printf("SMOKE_VIRTIO_DRIVERS %s\n", strings.Join(names, ","))
			}
		}
	}
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
}

func fail(format string, args ...any) {
	fmt.Printf("SMOKE_FAIL "+format+"\n", args...)
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
}
