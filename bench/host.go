package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/kernel"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

// hostFacts describe the machine the numbers come from.
type hostFacts struct {
	cpu, cores, tsc    string
	memory             string
	accel, accelReason string
	qemu               string
	hostKernel         string
	guestKernel        string
	goVersion          string
	commit             string
}

func gatherHost(k *kernel.Kernel) hostFacts {
	f := hostFacts{
		cpu:         "unknown",
		cores:       fmt.Sprint(runtime.NumCPU()),
		goVersion:   runtime.Version(),
		guestKernel: k.String(),
	}
	if file, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(file)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				f.cpu = strings.TrimSpace(v)
				break
			}
		}
		file.Close()
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		f.memory = fmt.Sprintf("%.0f GiB", float64(si.Totalram)*float64(si.Unit)/(1<<30))
	}
	if khz, err := qemu.HostTSCkHz(); err == nil {
		f.tsc = fmt.Sprintf("%.2f MHz", float64(khz)/1000)
	} else {
		f.tsc = err.Error()
	}
	f.accel, f.accelReason = qemu.DetectAccel()
	if v, err := qemu.Version(""); err == nil {
		f.qemu = v
	} else {
		f.qemu = err.Error()
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		f.hostKernel = unix.ByteSliceToString(u.Release[:])
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		f.commit = strings.TrimSpace(string(out))
	}
	return f
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fs := strings.Fields(string(b))
	if len(fs) < 3 {
		return "unknown"
	}
	return strings.Join(fs[:3], " ")
}

// lookTool finds a program on PATH or in the sbin folders a non-root PATH
// often lacks.
func lookTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// cpuTimes is CPU time (user + system) used so far by this process and by
// its reaped children (the QEMU processes once they have exited).
func cpuTimes() (self, children time.Duration) {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		self = tv(ru.Utime) + tv(ru.Stime)
	}
	if unix.Getrusage(unix.RUSAGE_CHILDREN, &ru) == nil {
		children = tv(ru.Utime) + tv(ru.Stime)
	}
	return self, children
}

func tv(t unix.Timeval) time.Duration { return time.Duration(t.Nano()) }

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on every
// Linux architecture microagent runs on).
const clockTicks = 100

// procCPU is the CPU time (user + system, all threads) a running process
// has used, from /proc/PID/stat (10 ms resolution).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count from its ")".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// cpuMeter measures the CPU time of this process plus one running VMM.
type cpuMeter struct {
	pid           int
	self0, vmm0   time.Duration
	selfOK, vmmOK bool
}

func startCPU(pid int) *cpuMeter {
	m := &cpuMeter{pid: pid}
	m.self0, _ = cpuTimes()
	v, err := procCPU(pid)
	m.vmm0, m.vmmOK = v, err == nil
	return m
}

// since returns the CPU time used since startCPU, or -1 when the VMM's
// times could not be read.
func (m *cpuMeter) since() time.Duration {
	self, _ := cpuTimes()
	v, err := procCPU(m.pid)
	if err != nil || !m.vmmOK {
		return -1
	}
	return self - m.self0 + v - m.vmm0
}
