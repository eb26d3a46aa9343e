package qemu

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/vmm"
)

func TestBuildArgs(t *testing.T) {
	mc := MachineConfig{
		Config: vmm.Config{
			Kernel:      "/k/vmlinux",
			Initrd:      "/k/initrd",
			Cmdline:     " root=/dev/vda ",
			MemoryMiB:   512,
			CPUs:        2,
			Disks:       []vmm.Disk{{Path: "/d/a,b.raw", Format: "raw", ReadOnly: true}, {Path: "/d/w.qcow2", Format: "qcow2"}},
			ChannelName: "agent",
			SerialLog:   "/r/serial.log",
			Memory:      &vmm.Memory{File: os.Stdin, Shared: true},
			Incoming:    true,
		},
		ExtraArgs: []string{"-S"},
	}
	got := buildArgs(&mc, launch{accel: AccelTCG, tscKHz: 2096052, channelFD: 3, memoryFD: 4, qmpFD: 5})
	want := []string{
		"-M", "microvm,memory-backend=mem", "-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "2",
		"-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
		"-kernel", "/k/vmlinux", "-initrd", "/k/initrd",
		"-append", "console=ttyS0 quiet panic=-1 tsc_early_khz=2096052 tsc=reliable root=/dev/vda",
		"-object", "memory-backend-file,id=mem,size=512M,mem-path=/proc/self/fd/4,share=on",
		"-drive", "id=d0,file=/d/a,,b.raw,format=raw,if=none,readonly=on", "-device", "virtio-blk-device,drive=d0",
		"-drive", "id=d1,file=/d/w.qcow2,format=qcow2,if=none", "-device", "virtio-blk-device,drive=d1",
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,fd=3,server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=agent",
		"-chardev", "file,id=serial0,path=/r/serial.log,append=on", "-serial", "chardev:serial0",
		"-chardev", "socket,id=qmp,fd=5,server=on,wait=off", "-mon", "chardev=qmp,mode=control",
		"-incoming", "defer", "-S",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("args:\n got %q\nwant %q", got, want)
	}

	// KVM: host CPU, no clock arguments; no channel, no serial log,
	// private memory.
	mc = MachineConfig{Config: vmm.Config{Kernel: "/k", Initrd: "/i", MemoryMiB: 256, CPUs: 1}}
	got = buildArgs(&mc, launch{accel: AccelKVM, tscKHz: 2096052, channelFD: -1, qmpFD: 3})
	s := strings.Join(got, " ")
	for _, bad := range []string{"tsc_early_khz", "virtio-serial", "memory-backend", "-incoming"} {
		if strings.Contains(s, bad) {
			t.Errorf("KVM args contain %q: %s", bad, s)
		}
	}
	for _, good := range []string{"-accel kvm -cpu host", "-serial null", "fd=3,server=on", "-append console=ttyS0 quiet panic=-1 -"} {
		if !strings.Contains(s, good) {
			t.Errorf("KVM args lack %q: %s", good, s)
		}
	}
}

func TestValidateDefaults(t *testing.T) {
	dir := t.TempDir()
	k := filepath.Join(dir, "k")
	os.WriteFile(k, nil, 0o600)
	mc := MachineConfig{Config: vmm.Config{Kernel: k, Initrd: k, Disks: []vmm.Disk{{Path: k}}}}
	if err := validate(&mc); err != nil {
		t.Fatal(err)
	}
	if mc.MemoryMiB != DefaultMemoryMiB || mc.CPUs != DefaultCPUs || mc.Disks[0].Format != "raw" {
		t.Errorf("defaults not applied: %+v", mc.Config)
	}
	for name, edit := range map[string]func(*MachineConfig){
		"negative memory": func(mc *MachineConfig) { mc.MemoryMiB = -1 },
		"kernel is a dir": func(mc *MachineConfig) { mc.Kernel = dir },
		"memory no file":  func(mc *MachineConfig) { mc.Memory = &vmm.Memory{Shared: true} },
		"no kernel":       func(mc *MachineConfig) { mc.Kernel = "" },
	} {
		mc := MachineConfig{Config: vmm.Config{Kernel: k, Initrd: k}}
		edit(&mc)
		if err := validate(&mc); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseVersion(t *testing.T) {
	v, err := parseVersion("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard\n")
	if err != nil || v != "7.2.22" {
		t.Errorf("got %q, %v", v, err)
	}
	if v, err := parseVersion("QEMU emulator version 9.1\n"); err != nil || v != "9.1" {
		t.Errorf("got %q, %v", v, err)
	}
	if _, err := parseVersion("something else\n"); err == nil {
		t.Error("no error for unrelated output")
	}
}

func TestHostTSCkHz(t *testing.T) {
	khz, err := HostTSCkHz()
	if err != nil {
		t.Skipf("no TSC here: %v", err)
	}
	again, err := measureTSCkHz()
	if err != nil {
		t.Fatal(err)
	}
	diff := float64(khz-again) / float64(khz)
	if diff < -0.005 || diff > 0.005 {
		t.Errorf("two measurements differ: %d vs %d kHz", khz, again)
	}
	if cached, _ := HostTSCkHz(); cached != khz {
		t.Errorf("not cached: %d then %d", khz, cached)
	}
	t.Logf("host TSC: %d kHz (second measurement %d)", khz, again)
}

func TestDetectAccel(t *testing.T) {
	t.Setenv(AccelEnv, "tcg")
	if a, r := DetectAccel(); a != AccelTCG || !strings.Contains(r, AccelEnv) {
		t.Errorf("env tcg: %s (%s)", a, r)
	}
	t.Setenv(AccelEnv, "kvm")
	if a, _ := DetectAccel(); a != AccelKVM {
		t.Errorf("env kvm: %s", a)
	}
	t.Setenv(AccelEnv, "")
	a, r := DetectAccel()
	t.Logf("this host: %s: %s", a, r)
	if a != AccelKVM && a != AccelTCG {
		t.Errorf("auto: %q", a)
	}
	t.Setenv(AccelEnv, "fast")
	if _, r := DetectAccel(); !strings.Contains(r, "ignored") {
		t.Errorf("bad env value not reported: %s", r)
	}

	old := kvmDevice
	kvmDevice = filepath.Join(t.TempDir(), "kvm")
	t.Cleanup(func() { kvmDevice = old })
	t.Setenv(AccelEnv, "")
	if a, r := DetectAccel(); a != AccelTCG || !strings.Contains(r, kvmDevice) {
		t.Errorf("missing device: %s (%s)", a, r)
	}
}

func TestCPUHasVirtFlag(t *testing.T) {
	dir := t.TempDir()
	old := cpuinfoPath
	t.Cleanup(func() { cpuinfoPath = old })
	for content, want := range map[string]bool{
		"processor\t: 0\nflags\t\t: fpu vme svm lm\n":            true,
		"processor\t: 0\nflags\t\t: fpu vmx\n":                   true,
		"processor\t: 0\nflags\t\t: fpu hypervisor vmxnothing\n": false,
		"processor\t: 0\nvmx flags\t: ept\nflags\t\t: fpu\n":     false,
	} {
		cpuinfoPath = filepath.Join(dir, "cpuinfo")
		os.WriteFile(cpuinfoPath, []byte(content), 0o600)
		if got, err := cpuHasVirtFlag(); err != nil || got != want {
			t.Errorf("%q: got %v, %v", content, got, err)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	b := newTailBuffer(32)
	b.Write([]byte("first line\nsecond line\n"))
	if got := b.lastLines(5); got != "first line\nsecond line" {
		t.Errorf("got %q", got)
	}
	b.Write([]byte("third line that is long\nlast\n"))
	if got := b.lastLines(5); got != "third line that is long\nlast" {
		t.Errorf("after overflow got %q", got)
	}
	b.Write([]byte(strings.Repeat("z", 100) + "\nend\n"))
	if got := b.lastLines(1); got != "end" {
		t.Errorf("huge write: got %q", got)
	}
	if len(b.buf) > 32 {
		t.Errorf("buffer grew to %d", len(b.buf))
	}
}
