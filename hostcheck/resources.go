package hostcheck

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// FitResources refuses a machine this host cannot run: more virtual CPUs
// than the CPUs this process may use, or more memory than the host has in
// all. Such a guest does not fail, it crawls: the start waits out its boot
// timeout. Callers check before anything boots and add what to do.
func FitResources(memoryMiB, cpus int) error {
	n, total := Capacity()
	if cpus > n {
		return fmt.Errorf("%d virtual CPUs, but this host has %d CPUs: at most %d", cpus, n, n)
	}
	if total > 0 && int64(max(memoryMiB, 0)) > total {
		return fmt.Errorf("%d MiB of memory, but this host has %d MiB in all: less than that", memoryMiB, total)
	}
	return nil
}

// Capacity is what this host has for guests in all: the CPUs this process
// may use and the host's memory in MiB (0 when the kernel does not say).
func Capacity() (cpus int, memoryMiB int64) {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		memoryMiB = int64(uint64(si.Totalram) * uint64(si.Unit) >> 20)
	}
	return runtime.NumCPU(), memoryMiB
}
