package vmm

import (
	"context"
	"slices"
)

// Swap is a user network's secret swap (--secret-egress): the guest holds
// a placeholder for each secret, and on an HTTPS request to one of the
// secret's hosts the network terminates the guest's TLS with the
// workspace CA, puts the value in the placeholder's place in the request
// headers and forwards the request to the real host. The network holds no
// reference: it asks Source for each value, per request. A backend whose
// network cannot swap refuses a Network with a Swap.
type Swap struct {
	Rules []SwapRule
	// CACert and CAKey are the workspace CA's PEM certificate and key:
	// the certificate is in the guest's trust stores, the key stays on the
	// host (only the network's process gets it).
	CACert, CAKey []byte
	// ExtraRoots are PEM certificates the real hosts are verified against
	// besides the system's (--egress-ca-file).
	ExtraRoots []byte
	Source     SwapSource
}

// AddSwapHosts adds hosts (a secret swap's, in ParseAllowName's form) to
// an allowlist in force (AllowNames, or EgressNone: a list with nothing
// in it), so that the hosts a value is for can be reached; it reports
// whether n changed. Without an allowlist every public host is reachable
// already and n is left as it is.
func (n *Network) AddSwapHosts(hosts []string) bool {
	if n == nil || (len(n.AllowNames) == 0 && !n.EgressNone) {
		return false
	}
	changed := false
	for _, h := range hosts {
		if !slices.Contains(n.AllowNames, h) {
			n.AllowNames = append(n.AllowNames, h)
			changed = true
		}
	}
	if changed {
		n.EgressNone = false
	}
	return changed
}

// SwapRule says which hosts a secret's value may be sent to in place of
// its placeholder.
type SwapRule struct {
	Name        string
	Placeholder string
	// Hosts are in --egress-allow syntax (ParseAllowName).
	Hosts []string
}

// SwapRequest is the request a value is asked for: the secret, and the
// host, method and path (without the query) the value is to go to.
type SwapRequest struct {
	Name, Host, Method, Path string
}

// SwapSource resolves values for the swap. Value's result is zeroed by the
// caller once used; an error should be a *SwapError, whose Kind alone
// reaches the guest (any other error counts as kind "failed").
type SwapSource interface {
	Value(ctx context.Context, r SwapRequest) ([]byte, error)
}

// SwapError is a SwapSource's failure reduced to its kind ("not found",
// "denied", "unavailable"...), never the reference's details.
type SwapError struct {
	Kind string
}

func (e *SwapError) Error() string { return "secret not resolved: " + e.Kind }
