package k8snode

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/microagent-dev/microagent/hostcheck"
)

// Capacity is the host's unless the config gives less; more than the host
// has, or a negative figure, is refused with what to give instead.
func TestCapacity(t *testing.T) {
	hostCPUs, hostMiB := hostcheck.Capacity()
	guestMiB := max(hostMiB-memoryReserveMiB, 0)
	if guestMiB < 512 {
		t.Skipf("this host has %d MiB: too little to test a smaller node", hostMiB)
	}
	got := func(cfg Config) (cpu, memMiB, pods int64) {
		t.Helper()
		c, err := cfg.capacity()
		if err != nil {
			t.Fatalf("capacity(%+v): %v", cfg, err)
		}
		return c.Cpu().Value(), c.Memory().Value() >> 20, c.Pods().Value()
	}
	if cpu, mem, pods := got(Config{}); cpu != int64(hostCPUs) || mem != guestMiB || pods != DefaultMaxPods {
		t.Errorf("default capacity %d CPUs, %d MiB, %d pods; want %d, %d, %d", cpu, mem, pods, hostCPUs, guestMiB, DefaultMaxPods)
	}
	if cpu, mem, pods := got(Config{CPUs: 1, MemoryMiB: 384, MaxPods: 3}); cpu != 1 || mem != 384 || pods != 3 {
		t.Errorf("capacity %d CPUs, %d MiB, %d pods; want 1, 384, 3", cpu, mem, pods)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{CPUs: hostCPUs + 1}, "give at most"},
		{Config{MemoryMiB: guestMiB + 1}, "give at most"},
		{Config{MemoryMiB: -1}, "negative"},
		{Config{MaxPods: -2}, "negative"},
	} {
		if _, err := tc.cfg.capacity(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("capacity(%+v) = %v, want an error saying %q", tc.cfg, err, tc.want)
		}
	}
	var n corev1.Node
	n.Labels = map[string]string{}
	c, _ := (&Config{MemoryMiB: 384}).capacity()
	fillNode(&n, &Config{Address: "127.0.0.1", NodeName: "n"}, c, 10250)
	if n.Status.Allocatable.Memory().Value() != 384<<20 || n.Status.Capacity.Memory().Value() != 384<<20 {
		t.Errorf("node capacity %v, allocatable %v; want 384 MiB of memory", n.Status.Capacity, n.Status.Allocatable)
	}
}
