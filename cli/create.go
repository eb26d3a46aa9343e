package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

func newCreateCmd(g *globals) *cobra.Command {
	var (
		res        resourceFlags
		name, ref  string
		pull       string
		kernelPath string
		sec        secretFlags
		fromSnap   string
		netf       networkFlags
		files      fileFlags
	)
	c := &cobra.Command{
		Use:   "create NAME --image REF | create NAME --from-snapshot WS:TAG",
		Short: "Create a named workspace: a persistent microVM whose disk survives between boots",
		Long: `Create a named workspace from an OCI image. The image is pulled (per --pull)
and the workspace pinned to its digest; its writable disk is created empty at
--disk-size (or the profile's size). "microagent start NAME" boots it.

Secrets: --secret, --secret-on-demand and --secrets-env-file declare secrets
(NAME=<scheme>:<ref>); the manifest keeps the references, never the values,
and every start resolves them afresh (failing closed, before the VM boots).
Materialized secrets appear as 0400 files in a tmpfs at /run/secrets;
on-demand ones are fetched over $MICROAGENT_SECRETS_SOCK. --secrets-audit
records every access in the workspace's append-only audit log ("microagent
secret audit NAME"). A malformed declaration creates nothing (exit 2).

Network: --network, -p/--publish, --host-access, --egress-allow-cidr, --egress-allow(-file),
--egress and --dns work as for "run"
and are kept for every start: published ports are bound again at each start,
and a port taken on the host then fails that start before the VM boots. A
spec that can never work creates nothing (exit 2).

--from-snapshot WS:TAG forks a snapshot instead: the new workspace has the
source's image, resources and secret declarations, its own copy of the
snapshot's disk, and is started at once, resumed from the snapshot's moment
(memory mapped copy-on-write) with its own hostname, machine id and fresh
entropy; its secrets are resolved afresh. The source is not changed. If that
first start fails, the fork is deleted again.

Files: --file HOST:GUEST[:MODE] archives the host file or directory now (later
changes to it do not matter) and the first start puts it at GUEST, creating
parent directories, owned by the image's user, before it reports ready; then
the workspace forgets it. A missing host path creates nothing (exit 2). If the
copy fails, that start fails and the next start tries again.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 1 {
				if name != "" && name != args[0] {
					return usageError("two names given: %q and --name %q", args[0], name)
				}
				name = args[0]
			}
			if name == "" {
				return usageError("create needs a name: microagent create NAME --image REF")
			}
			if fromSnap != "" {
				return createFork(g, c, name, fromSnap)
			}
			if ref == "" {
				return usageError("create needs --image REF")
			}
			if err := workspace.ValidateName(name); err != nil {
				return wsError(err)
			}
			r, err := res.resolve()
			if err != nil {
				return err
			}
			policy, err := parsePullPolicy(pull)
			if err != nil {
				return err
			}
			decls, err := sec.declarations()
			if err != nil {
				return err
			}
			network, err := netf.resolve()
			if err != nil {
				return err
			}
			specs, err := files.resolve()
			if err != nil {
				return err
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			inf, err := workspace.Create(c.Context(), h, workspace.CreateOptions{
				Name:         name,
				Image:        ref,
				Pull:         policy,
				Profile:      res.profile,
				Resources:    workspace.Resources{MemoryMiB: r.MemoryMiB, CPUs: r.CPUs, DiskBytes: r.DiskBytes},
				KernelPath:   kernelPath,
				Progress:     progressWriter(g),
				Secrets:      decls,
				SecretsAudit: sec.audit,
				Network:      network,
				Files:        specs,
			})
			if err != nil {
				return wsError(err)
			}
			// Declaration-time warnings; each start repeats them.
			for _, w := range decls.PlaintextWarnings() {
				fmt.Fprintln(g.stderr, w.String())
			}
			if g.json {
				return g.printJSON(inf)
			}
			fmt.Fprintf(g.stdout, "Created workspace %s (%s, %s); start it with \"microagent start %s\"\n",
				inf.Name, inf.Image, resources(inf.Resources), inf.Name)
			return nil
		},
	}
	c.Flags().StringVar(&name, "name", "", "workspace name (instead of the argument)")
	c.Flags().StringVar(&ref, "image", "", "OCI image reference (required)")
	c.Flags().StringVar(&pull, "pull", "missing", "when to pull the image: missing, always, never")
	c.Flags().StringVar(&kernelPath, "kernel", "", "boot this kernel instead of the installed default: a vmlinux or bzImage file, or the NAME of one installed with \"kernel install --name NAME\" (a distribution kernel with its modules)")
	c.Flags().StringVar(&fromSnap, "from-snapshot", "", "fork WS:TAG, a snapshot of another workspace, and start the fork")
	c.RegisterFlagCompletionFunc("image", complete(g, completeImages))
	c.RegisterFlagCompletionFunc("from-snapshot", complete(g, completeSnapshotRefs))
	res.add(c)
	sec.add(c, true)
	netf.add(c)
	files.add(c, "at its first start (copied now, put in before start reports ready)", "the image's user")
	return c
}

// createFork is "create NAME --from-snapshot WS:TAG": Fork, then Start; a
// fork whose first start fails is deleted, so the command either leaves a
// running fork or nothing.
func createFork(g *globals, c *cobra.Command, name, ref string) error {
	for _, f := range []string{"image", "pull", "kernel", "profile", "memory", "cpus", "disk-size", "secret", "secret-on-demand", "secrets-env-file", "secrets-audit", "network", "publish", "host-access", "egress-allow-cidr", "egress-allow", "egress-allow-file", "egress", "dns", "file"} {
		if fl := c.Flags().Lookup(f); fl != nil && fl.Changed {
			return usageError("--%s cannot be combined with --from-snapshot: a fork takes the source's image, resources, secret declarations and network (without its published ports)", f)
		}
	}
	if err := workspace.ValidateName(name); err != nil {
		return wsError(err)
	}
	src, tag, err := workspace.ParseSnapshotRef(ref)
	if err != nil {
		return snapError(err)
	}
	h, err := g.home()
	if err != nil {
		return err
	}
	if _, err := workspace.Fork(c.Context(), h, workspace.ForkOptions{Name: name, Source: src, Tag: tag}); err != nil {
		return snapError(err)
	}
	inf, err := workspace.Start(c.Context(), h, workspace.StartOptions{Name: name, Progress: progressWriter(g), Warnings: g.stderr})
	if err != nil {
		if derr := workspace.Delete(context.WithoutCancel(c.Context()), h, workspace.DeleteOptions{Name: name, Force: true}); derr != nil {
			err = fmt.Errorf("%w (and the fork could not be deleted: %v)", err, derr)
		}
		return snapError(err)
	}
	if g.json {
		return g.printJSON(inf)
	}
	fmt.Fprintf(g.stdout, "Forked %s from %s:%s, running (resumed in %.1fs)\n", name, src, tag, inf.BootSeconds)
	return nil
}
