package workspace

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"
)

// EgressChange changes the allowlist of a workspace created with one
// (--egress-allow or --egress none).
type EgressChange struct {
	Name string
	// Allow adds names (vmm.ParseAllowName: a host or a .SUFFIX).
	Allow []string
	// Revoke removes names, as they are listed.
	Revoke []string
}

// EgressResult is a workspace's allowlist after a change.
type EgressResult struct {
	// AllowNames is the allowlist now; empty with EgressNone.
	AllowNames []string `json:"egressAllow"`
	// EgressNone: nothing is allowed (the last name was revoked).
	EgressNone bool `json:"egressNone,omitempty"`
	// Live reports that the running network follows the new list from now
	// on; false when the workspace is not running (its next start does).
	Live bool `json:"live"`
}

// ChangeEgress adds and revokes allowed names of a workspace, records the
// list in its manifest (later starts, restores and forks use it) and, when
// the workspace runs, puts it in force in its network: new connections and
// DNS queries follow it at once, connections already open stay open.
// Revoking the last name leaves nothing allowed (never the open default).
// A workspace without an allowlist has every public address open already:
// adding to it is refused rather than turning the open network into a
// list of one. Bad names and names not in the list are ErrNetwork, with
// nothing changed.
func ChangeEgress(ctx context.Context, h home.Home, c EgressChange) (*EgressResult, error) {
	allow, err := parseNames(c.Allow)
	if err != nil {
		return nil, fmt.Errorf("workspace %s: %w: %w", c.Name, ErrNetwork, err)
	}
	revoke, err := parseNames(c.Revoke)
	if err != nil {
		return nil, fmt.Errorf("workspace %s: %w: %w", c.Name, ErrNetwork, err)
	}
	if len(allow) == 0 && len(revoke) == 0 {
		return nil, fmt.Errorf("workspace %s: %w: no name to allow or revoke", c.Name, ErrNetwork)
	}
	w, err := open(h, c.Name)
	if err != nil {
		return nil, err
	}
	l, err := w.Lock("egress")
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	m, err := w.ReadManifest()
	if err != nil {
		return nil, err
	}
	nc, err := m.Network()
	if err != nil {
		return nil, err
	}
	if nc.Mode == vmm.NetworkIsolated {
		return nil, fmt.Errorf("workspace %s: %w: it has no network (--network isolated)", c.Name, ErrNetwork)
	}
	if len(nc.AllowNames) == 0 && !nc.EgressNone {
		return nil, fmt.Errorf("workspace %s: %w: it has no allowlist, so every public address is open already; an allowlist is given when a workspace is created (--egress-allow, --egress-allow-file or --egress none)", c.Name, ErrNetwork)
	}
	names := slices.Clone(nc.AllowNames)
	for _, r := range revoke {
		i := slices.Index(names, r)
		if i < 0 {
			listed := "nothing"
			if len(names) > 0 {
				listed = strings.Join(names, " ")
			}
			return nil, fmt.Errorf("workspace %s: %w: %s is not in its allowlist (it allows %s)", c.Name, ErrNetwork, r, listed)
		}
		names = slices.Delete(names, i, i+1)
	}
	for _, a := range allow {
		if !slices.Contains(names, a) {
			names = append(names, a)
		}
	}
	changed := !slices.Equal(names, nc.AllowNames) || nc.EgressNone != (len(names) == 0)
	nc.AllowNames, nc.EgressNone = names, len(names) == 0
	res := &EgressResult{AllowNames: names, EgressNone: nc.EgressNone}
	if changed {
		if err := m.SetNetwork(nc); err != nil {
			return nil, err
		}
		if err := wsdir.WriteManifest(w.ManifestPath(), m); err != nil {
			return nil, err
		}
	}
	obs, err := w.observe()
	if err != nil {
		return nil, err
	}
	if obs.state != Running {
		return res, nil
	}
	err = w.control("egress", func(cl *supervisor.Client) error { return cl.UpdateEgress(ctx, nc) })
	switch {
	case err == nil:
		res.Live = true
	case errors.Is(err, vmm.ErrEgressFixed):
		// The list is recorded; the running network keeps its own.
	default:
		return nil, fmt.Errorf("%w; the new allowlist is recorded and its next start uses it, but it is not known to be in force now: halt and start %s to be sure", err, c.Name)
	}
	return res, nil
}

// parseNames reads --egress-allow values.
func parseNames(in []string) ([]string, error) {
	var out []string
	for _, s := range in {
		n, err := vmm.ParseAllowName(s)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}
