package cli

import (
	"strings"
	"testing"
)

// TestRunNetworkUsageErrors: a network flag run cannot use is microagent's
// own failure (125), found before anything is pulled or booted.
func TestRunNetworkUsageErrors(t *testing.T) {
	state := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--network", "bridge"}, `unknown network mode "bridge"`},
		{[]string{"-p", "8080"}, `"8080": need a host port and a guest port`},
		{[]string{"-p", "x:80"}, `"x:80": host port: "x" is not a number`},
		{[]string{"--publish", "8080:70000"}, `"8080:70000": guest port: 70000 is out of range`},
		{[]string{"-p", "8080:80/udp"}, `"8080:80/udp": only tcp`},
		{[]string{"-p", "localhost:8080:80"}, `"localhost:8080:80": host address`},
		{[]string{"--network", "isolated", "-p", "8080:80"}, "cannot publish 127.0.0.1:8080:80/tcp: the isolated network has no network device"},
		{[]string{"--network", "isolated", "--host-access"}, "isolated network has none"},
		{[]string{"--host-access=0"}, `"0" is not a port`},
		{[]string{"--host-access=8080,x"}, `"x" is not a port`},
		{[]string{"--host-access=8080", "--dns", "10.0.2.2"}, "host access to port 53"},
		{[]string{"--egress-allow-cidr", "lan"}, `"lan": not an address range`},
		{[]string{"--egress-allow-cidr", "192.168.1.7/24"}, "give a network address"},
		{[]string{"--egress-allow-cidr", "0.0.0.0/0"}, "covers the host's loopback"},
		{[]string{"--network", "isolated", "--egress-allow-cidr", "10.0.0.0/8"}, "isolated network has none"},
		{[]string{"--egress-allow", "*.github.com"}, "no wildcards"},
		{[]string{"--egress-allow", "1.2.3.4"}, "an address, not a name"},
		{[]string{"--egress-allow", ""}, "empty"},
		{[]string{"--egress-allow", "a..b"}, "empty or over-long label"},
		{[]string{"--egress-allow", "pypi.org", "--dns", "1.1.1.1"}, "drop --dns"},
		{[]string{"--egress", "some"}, `--egress "some"`},
		{[]string{"--egress", "none", "--egress-allow", "pypi.org"}, "--egress none refuses every name"},
		{[]string{"--network", "isolated", "--egress", "none"}, "isolated network has none"},
	} {
		args := append([]string{"--state-dir", state, "run"}, c.args...)
		code, out, errs := cli(t, "", append(args, "img", "true")...)
		if code != ExitOwnFailure || out != "" || !strings.Contains(errs, c.want) {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want exit 125 and %q", c.args, code, out, errs, c.want)
		}
	}
}
