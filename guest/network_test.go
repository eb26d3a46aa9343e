//go:build linux

package guest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/internal/testenv"
)

func TestMergeHosts(t *testing.T) {
	want := []channel.HostEntry{
		{IP: "127.0.0.1", Names: []string{"localhost"}},
		{IP: "10.0.2.15", Names: []string{"box", "box.local"}},
		{IP: "::1", Names: []string{"localhost", "ip6-localhost"}},
	}
	got := string(mergeHosts([]byte("127.0.0.1 localhost # image\n10.9.9.9\tbox.local"), want))
	if got != "127.0.0.1 localhost # image\n10.9.9.9\tbox.local\n10.0.2.15\tbox\n::1\tip6-localhost\n" {
		t.Errorf("merge: %q", got)
	}
	if got := string(mergeHosts(nil, want)); got != "127.0.0.1\tlocalhost\n10.0.2.15\tbox box.local\n::1\tlocalhost ip6-localhost\n" {
		t.Errorf("empty: %q", got)
	}
}

func TestConfigureNetworkFiles(t *testing.T) {
	root := t.TempDir()
	// An image whose resolv.conf is a dangling symlink (as with
	// systemd-resolved): it is replaced, not followed.
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.Symlink("/run/systemd/resolve/stub-resolv.conf", filepath.Join(root, "etc/resolv.conf"))
	n := &channel.NetworkConfig{DNS: []string{"10.0.2.3"}, Hosts: []channel.HostEntry{{IP: "127.0.0.1", Names: []string{"localhost"}}}}
	if err := configureNetwork(n, root); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(root, "etc/resolv.conf"))
	if !strings.Contains(string(b), "\nnameserver 10.0.2.3\n") {
		t.Errorf("resolv.conf: %q", b)
	}
	fi, _ := os.Lstat(filepath.Join(root, "etc/resolv.conf"))
	if fi.Mode() != 0o644 {
		t.Errorf("resolv.conf mode %v, want a 0644 file", fi.Mode())
	}
	b, _ = os.ReadFile(filepath.Join(root, "etc/hosts"))
	if string(b) != "127.0.0.1\tlocalhost\n" {
		t.Errorf("hosts: %q", b)
	}
	if b := resolvConf(nil); strings.Contains(string(b), "nameserver") {
		t.Errorf("no DNS: %q", b)
	}
	for _, bad := range []*channel.NetworkConfig{
		{Interface: "eth0", Address: "10.0.2.15"},
		{Interface: "eth0", Address: "fe80::1/64"},
		{DNS: []string{"dns.example"}},
	} {
		if err := configureNetwork(bad, root); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// TestConfigureInterface runs the real netlink and ioctl code in a fresh
// network namespace on the host (root only), on its loopback device.
func TestConfigureInterface(t *testing.T) {
	testenv.RequireRoot(t, "a network namespace")
	errc := make(chan error, 1)
	var routes, addrs string
	var up bool
	go func() {
		// The thread is never unlocked, so it exits with the goroutine and
		// takes the namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		err := configureInterface("lo", netip.MustParsePrefix("10.9.0.1/24"), netip.MustParseAddr("10.9.0.2"))
		if err == nil {
			// Again: a retried setup must succeed.
			err = configureInterface("lo", netip.MustParsePrefix("10.9.0.1/24"), netip.MustParseAddr("10.9.0.2"))
		}
		b, _ := os.ReadFile("/proc/thread-self/net/route")
		routes = string(b)
		if ifi, ierr := net.InterfaceByName("lo"); ierr == nil && err == nil {
			as, _ := ifi.Addrs()
			addrs = fmt.Sprint(as)
			up = ifi.Flags&net.FlagUp != 0
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// Default route (destination 0) via 10.9.0.2 (0x0200090A little-endian).
	if !strings.Contains(routes, "lo\t00000000\t0200090A") {
		t.Errorf("routes:\n%s", routes)
	}
	if !strings.Contains(addrs, "10.9.0.1/24") || !up {
		t.Errorf("lo: addresses %s, up %v", addrs, up)
	}
}
