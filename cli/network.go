package cli

import (
	"strconv"
	"strings"

	"github.com/microagent-dev/microagent/workspace"
)

// networkSummary renders a workspace's network on one line, as
// "user, ports 127.0.0.1:8080->80/tcp, host access (ports 53,8080),
// egress allow 192.168.1.0/24, egress only pypi.org .github.com, dns 10.0.2.2".
func networkSummary(n *workspace.NetworkConfig) string {
	parts := []string{string(n.Mode)}
	if len(n.Publish) > 0 {
		ps := make([]string, len(n.Publish))
		for i, p := range n.Publish {
			ps[i] = p.String()
		}
		parts = append(parts, "ports "+strings.Join(ps, " "))
	}
	if n.HostAccess {
		access := "host access"
		if len(n.HostPorts) > 0 {
			ps := make([]string, len(n.HostPorts))
			for i, p := range n.HostPorts {
				ps[i] = strconv.Itoa(p)
			}
			access += " (ports " + strings.Join(ps, ",") + ")"
		}
		parts = append(parts, access)
	}
	if len(n.AllowCIDRs) > 0 {
		cs := make([]string, len(n.AllowCIDRs))
		for i, c := range n.AllowCIDRs {
			cs[i] = c.String()
		}
		parts = append(parts, "egress allow "+strings.Join(cs, " "))
	}
	if len(n.AllowNames) > 0 {
		parts = append(parts, "egress only "+strings.Join(n.AllowNames, " "))
	}
	if n.EgressNone {
		parts = append(parts, "egress none")
	}
	if len(n.DNS) > 0 {
		ds := make([]string, len(n.DNS))
		for i, d := range n.DNS {
			ds[i] = d.String()
		}
		parts = append(parts, "dns "+strings.Join(ds, " "))
	}
	if len(n.DNSUpstreams) > 0 {
		us := make([]string, len(n.DNSUpstreams))
		for i, u := range n.DNSUpstreams {
			us[i] = u.String()
		}
		parts = append(parts, "dns upstream "+strings.Join(us, " "))
	}
	return strings.Join(parts, ", ")
}
