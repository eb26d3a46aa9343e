package qemu

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/microagent-dev/microagent/vmm"
)

func TestNetArgs(t *testing.T) {
	if a := netArgs(nil, -1); a != nil {
		t.Errorf("no network: got %q", a)
	}
	if a := netArgs(&vmm.Network{Mode: vmm.NetworkIsolated}, 3); a != nil {
		t.Errorf("isolated: got %q", a)
	}
	got := netArgs(&vmm.Network{}, -1)
	want := []string{"-netdev", "user,id=n0,ipv6=off,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,dhcpstart=10.0.2.15,restrict=on",
		"-device", "virtio-net-device,netdev=n0"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("default user:\n got %q\nwant %q", got, want)
	}
	got = netArgs(&vmm.Network{Mode: vmm.NetworkUser, HostAccess: true, Forwards: []vmm.Forward{
		{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 18080, GuestPort: 8080},
		{HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: 2222, GuestPort: 22},
	}}, -1)
	want[1] = "user,id=n0,ipv6=off,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,dhcpstart=10.0.2.15,restrict=off" +
		",hostfwd=tcp:127.0.0.1:18080-10.0.2.15:8080,hostfwd=tcp:0.0.0.0:2222-10.0.2.15:22"
	if !reflect.DeepEqual(got, want) {
		t.Errorf("host access and forwards:\n got %q\nwant %q", got, want)
	}
	// A stream netdev: the forwards and policy are the helper's (or passt's);
	// QEMU only gets the socket.
	got = netArgs(&vmm.Network{Forwards: []vmm.Forward{{HostIP: vmm.DefaultPublishIP, HostPort: 1, GuestPort: 1}}}, 4)
	want = []string{"-netdev", "stream,id=n0,server=off,addr.type=fd,addr.str=4", "-device", "virtio-net-device,netdev=n0,mac=52:54:00:12:34:56"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stream:\n got %q\nwant %q", got, want)
	}
}

func TestValidateNetwork(t *testing.T) {
	k := filepath.Join(t.TempDir(), "k")
	os.WriteFile(k, nil, 0o600)
	mc := MachineConfig{Config: vmm.Config{Kernel: k, Initrd: k, Network: &vmm.Network{Mode: vmm.NetworkIsolated,
		Forwards: []vmm.Forward{{HostIP: vmm.DefaultPublishIP, HostPort: 1, GuestPort: 1}}}}}
	if err := validate(&mc); err == nil {
		t.Error("isolated network with a forward: no error")
	}
}
