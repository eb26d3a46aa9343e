package cli

import (
	"strings"

	"github.com/microagent-dev/microagent/workspace"
)

// networkSummary renders a workspace's network on one line, as
// "user, ports 127.0.0.1:8080->80/tcp, host access, dns 10.0.2.2".
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
		parts = append(parts, "host access")
	}
	if len(n.DNS) > 0 {
		ds := make([]string, len(n.DNS))
		for i, d := range n.DNS {
			ds[i] = d.String()
		}
		parts = append(parts, "dns "+strings.Join(ds, " "))
	}
	return strings.Join(parts, ", ")
}
