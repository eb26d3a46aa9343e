package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/vmm"
)

// secretFlags are the secret declarations of run, create and start.
type secretFlags struct {
	secret      []string
	onDemand    []string
	egress      []string
	egressRoots []string
	envFiles    []string
	audit       bool
}

// add registers the flags; withAudit adds --secrets-audit (workspaces only:
// the audit log is per workspace).
func (f *secretFlags) add(c *cobra.Command, withAudit bool) {
	c.Flags().StringArrayVar(&f.secret, "secret", nil, "deliver a secret to /run/secrets: NAME=<scheme>:<ref> (env:, file:, dotenv:PATH#KEY, vault:, helper:)")
	c.Flags().StringArrayVar(&f.onDemand, "secret-on-demand", nil, "declare a secret fetched on demand over $MICROAGENT_SECRETS_SOCK, never written to a file: NAME=<scheme>:<ref>")
	c.Flags().StringArrayVar(&f.egress, "secret-egress", nil, "keep a secret out of the guest: it holds a placeholder (in /run/secrets/NAME and $NAME) that the network replaces "+
		"with the value only in HTTPS requests to the hosts given: NAME=<scheme>:<ref>@HOST[,HOST...] (HOST as --egress-allow takes it)")
	c.Flags().StringArrayVar(&f.egressRoots, "egress-ca-file", nil, "trust the CA certificates in this PEM file, besides the system's, for the hosts of --secret-egress (a corporate CA)")
	c.Flags().StringArrayVar(&f.envFiles, "secrets-env-file", nil, "deliver every key of this dotenv file as a secret (re-read at each start)")
	if withAudit {
		c.Flags().BoolVar(&f.audit, "secrets-audit", false, "append a record of every secret access to the workspace's audit log")
	}
}

// declarations parses the flags; a malformed declaration is a usage error
// naming the secret and the reason (never the reference's value part).
func (f *secretFlags) declarations() (secrets.Declarations, error) {
	var d secrets.Declarations
	for _, group := range []struct {
		list     []string
		onDemand bool
	}{{f.secret, false}, {f.onDemand, true}} {
		for _, s := range group.list {
			decl, err := secrets.ParseDecl(s)
			if err != nil {
				return d, &ExitError{Code: ExitUsage, Err: err}
			}
			decl.OnDemand = group.onDemand
			if err := d.Add(decl); err != nil {
				return d, &ExitError{Code: ExitUsage, Err: err}
			}
		}
	}
	for _, s := range f.egress {
		decl, err := parseEgressDecl(s)
		if err != nil {
			return d, &ExitError{Code: ExitUsage, Err: err}
		}
		if err := d.Add(decl); err != nil {
			return d, &ExitError{Code: ExitUsage, Err: err}
		}
	}
	for _, p := range f.egressRoots {
		if err := d.AddEgressRoot(p); err != nil {
			return d, &ExitError{Code: ExitUsage, Err: err}
		}
	}
	for _, p := range f.envFiles {
		if err := d.AddEnvFile(p); err != nil {
			return d, &ExitError{Code: ExitUsage, Err: err}
		}
	}
	return d, nil
}

// parseEgressDecl reads a --secret-egress declaration, its hosts in the
// network's --egress-allow syntax.
func parseEgressDecl(s string) (secrets.Decl, error) {
	decl, err := secrets.ParseEgressDecl(s)
	if err != nil {
		return decl, err
	}
	for i, h := range decl.EgressHosts {
		if decl.EgressHosts[i], err = vmm.ParseSwapHost(h); err != nil {
			return decl, fmt.Errorf("--secret-egress %s: %w", decl.Name, err)
		}
	}
	return decl, nil
}
