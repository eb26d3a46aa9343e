//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/bench/netpeer"
	"github.com/microagent-dev/microagent/vmm"
)

// netFloor is the "net" mode: the least a guest needs to serve a published
// port (see the package comment).
func netFloor() {
	for _, m := range [][3]string{{"devtmpfs", "/dev", "devtmpfs"}, {"sysfs", "/sys", "sysfs"}} {
		if err := unix.Mount(m[0], m[1], m[2], 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			fail("mount %s: %v", m[1], err)
		}
	}
	if err := loadModules("/lib/modules/order"); err != nil {
		fail("%v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat("/sys/class/net/eth0"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			fail("no eth0 within 10s")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := ifUp("eth0", vmm.UserAddressing); err != nil {
		fail("configure eth0: %v", err)
	}
	l, err := net.Listen("tcp4", fmt.Sprintf(":%d", netpeer.Port))
	if err != nil {
		fail("listen: %v", err)
	}
	fmt.Println("BENCH_NET ready")
	if err := netpeer.Serve(l); err != nil {
		fail("serve: %v", err)
	}
}

// ifUp gives the interface its address and netmask and brings it up. The
// hosts that reach it (the NAT's gateway) are on the link, so no route is
// needed.
func ifUp(name string, a vmm.Addressing) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := ifr.SetInet4Addr(a.Guest.AsSlice()); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFADDR, ifr); err != nil {
		return fmt.Errorf("set address: %w", err)
	}
	mask := net.CIDRMask(a.Prefix.Bits(), 32)
	if err := ifr.SetInet4Addr(mask); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFNETMASK, ifr); err != nil {
		return fmt.Errorf("set netmask: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set flags: %w", err)
	}
	return nil
}
