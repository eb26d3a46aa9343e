package qemu

import (
	"bytes"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Accelerator names accepted by Options.Accel and MICROAGENT_ACCEL.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// AccelEnv overrides accelerator auto-detection ("kvm" or "tcg").
const AccelEnv = "MICROAGENT_ACCEL"

// KVM ioctl numbers (linux/kvm.h: _IO(0xAE, n)).
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
	kvmAPIVersion    = 12
)

// kvmDevice and cpuinfoPath are variables so tests can point them elsewhere.
var (
	kvmDevice   = "/dev/kvm"
	cpuinfoPath = "/proc/cpuinfo"
)

// DetectAccel picks the accelerator Start uses when Options.Accel is empty:
// MICROAGENT_ACCEL when set to kvm or tcg, else kvm when /dev/kvm really
// works, else tcg. reason says why, for "microagent doctor".
//
// "Really works" means: /dev/kvm opens read-write, KVM_GET_API_VERSION is 12,
// KVM_CREATE_VM succeeds, and (on x86) the CPU has the vmx or svm flag. The
// last check matters on hosts whose KVM is a paravirtual implementation
// (kvm_pvm, in nested cloud sandboxes): there every ioctl succeeds but a
// stock guest kernel crawls and then stops with "KVM internal error".
func DetectAccel() (accel string, reason string) {
	env := os.Getenv(AccelEnv)
	switch env {
	case AccelKVM, AccelTCG:
		return env, fmt.Sprintf("set by %s", AccelEnv)
	case "":
	default:
		a, r := probeKVM()
		return a, fmt.Sprintf("%s=%q is neither kvm nor tcg, ignored; %s", AccelEnv, env, r)
	}
	return probeKVM()
}

// probeKVM decides between kvm and tcg by asking the kernel.
func probeKVM() (string, string) {
	fd, err := unix.Open(kvmDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		hint := ""
		if err == unix.EACCES {
			hint = " (add the user to the kvm group)"
		}
		return AccelTCG, fmt.Sprintf("%s: %v%s; using TCG emulation (slow)", kvmDevice, err, hint)
	}
	defer unix.Close(fd)
	v, err := ioctl(fd, kvmGetAPIVersion)
	if err != nil {
		return AccelTCG, fmt.Sprintf("%s: KVM_GET_API_VERSION: %v; using TCG", kvmDevice, err)
	}
	if v != kvmAPIVersion {
		return AccelTCG, fmt.Sprintf("%s: KVM API version %d, want %d; using TCG", kvmDevice, v, kvmAPIVersion)
	}
	vm, err := ioctl(fd, kvmCreateVM)
	if err != nil {
		return AccelTCG, fmt.Sprintf("%s: KVM_CREATE_VM: %v; using TCG", kvmDevice, err)
	}
	unix.Close(vm)
	if runtime.GOARCH == "amd64" || runtime.GOARCH == "386" {
		ok, err := cpuHasVirtFlag()
		if err != nil {
			return AccelTCG, fmt.Sprintf("KVM_CREATE_VM works but %v; using TCG", err)
		}
		if !ok {
			return AccelTCG, fmt.Sprintf("%s answers KVM_CREATE_VM but the CPU has no vmx/svm flag "+
				"(a paravirtual KVM such as kvm_pvm, which cannot run a stock guest kernel); using TCG", kvmDevice)
		}
	}
	return AccelKVM, fmt.Sprintf("%s works (API %d, KVM_CREATE_VM ok, hardware virtualization present)", kvmDevice, v)
}

// ioctl issues an argument-less KVM ioctl and returns its result.
func ioctl(fd int, req uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// cpuHasVirtFlag reports whether /proc/cpuinfo lists vmx (Intel VT-x) or
// svm (AMD-V).
func cpuHasVirtFlag() (bool, error) {
	data, err := os.ReadFile(cpuinfoPath)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", cpuinfoPath, err)
	}
	for line := range bytes.Lines(data) {
		name, flags, ok := bytes.Cut(line, []byte(":"))
		if !ok || !bytes.Equal(bytes.TrimSpace(name), []byte("flags")) {
			continue
		}
		for _, f := range bytes.Fields(flags) {
			if string(f) == "vmx" || string(f) == "svm" {
				return true, nil
			}
		}
	}
	return false, nil
}
