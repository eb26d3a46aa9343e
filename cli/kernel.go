package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/kernel"
)

func newKernelCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "kernel",
		Short: "Install, list and verify guest kernels",
	}
	var opts kernel.InstallOptions
	install := &cobra.Command{
		Use:   "install",
		Short: "Install the pinned default guest kernel (or one from a local .deb)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			if !g.json {
				opts.Stderr = g.stderr
			}
			k, err := kernel.Install(c.Context(), h, opts)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(k)
			}
			fmt.Fprintf(g.stdout, "installed kernel %s: %s\n", k.Name, k.String())
			return nil
		},
	}
	install.Flags().StringVar(&opts.Name, "name", "", "install under this name (default \"default\")")
	install.Flags().StringVar(&opts.Deb, "deb", "", "use this local kernel .deb instead of downloading the pinned one")
	install.Flags().StringArrayVar(&opts.ModulesDebs, "modules-deb", nil, "also unpack this local .deb over --deb's files: the modules package of distributions that ship modules apart (Ubuntu's linux-modules-RELEASE; repeatable)")
	install.Flags().BoolVar(&opts.Force, "force", false, "reinstall even when installed")

	list := &cobra.Command{
		Use:   "list",
		Short: "List installed kernels",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			ks, err := kernel.List(h)
			if err != nil {
				return err
			}
			if g.json {
				if ks == nil {
					ks = []*kernel.Kernel{}
				}
				return g.printJSON(ks)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tSOURCE\tVMLINUX SHA256")
			for _, k := range ks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Name, k.Version, k.Source, k.VmlinuxSHA256[:min(16, len(k.VmlinuxSHA256))])
			}
			return tw.Flush()
		},
	}
	var name string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Re-hash an installed kernel and its modules against its install record",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			if name == "" {
				name = kernel.DefaultName
			}
			k, err := kernel.Load(h, name)
			if err != nil {
				return err
			}
			if err := k.Verify(); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"name": k.Name, "ok": true, "vmlinux_sha256": k.VmlinuxSHA256})
			}
			fmt.Fprintf(g.stdout, "kernel %s ok (%d modules verified)\n", k.Name, len(k.Modules))
			return nil
		},
	}
	verify.Flags().StringVar(&name, "name", "", "kernel to verify (default \"default\")")
	c.AddCommand(install, list, verify)
	return c
}
