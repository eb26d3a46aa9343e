package cli

import (
	"encoding/json"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

func newLogsCmd(g *globals) *cobra.Command {
	var o workspace.LogsOptions
	c := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a workspace's supervisor log and serial console",
		Long: `Print a workspace's logs: the supervisor's (boots, halts, failures, with
times) and the guest's serial console of the current or last boot. --follow
keeps printing until the workspace stops. With --json, each piece is a JSON
line {"source": "supervisor"|"console", "data": "..."}.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNth(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			o.Name = args[0]
			if g.json {
				// One JSON object per piece: {"source":"console","data":"..."}.
				enc := json.NewEncoder(g.stdout)
				err = workspace.LogsFunc(c.Context(), h, o, func(src workspace.LogSource, b []byte) error {
					return enc.Encode(map[string]string{"source": string(src), "data": string(b)})
				})
			} else {
				err = workspace.Logs(c.Context(), h, o, g.stdout)
			}
			return wsError(err)
		},
	}
	c.Flags().BoolVarP(&o.Follow, "follow", "f", false, "keep printing new output until the workspace stops")
	c.Flags().BoolVar(&o.Console, "console", false, "only the guest's serial console")
	c.Flags().BoolVar(&o.Supervisor, "supervisor", false, "only the supervisor's log (boots, halts, failures)")
	return c
}
