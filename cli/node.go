package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

// nodeBinary is the program "microagent node" runs: the Kubernetes node
// lives in a binary of its own (cmd/microagent-node), so the Kubernetes
// libraries are not linked into microagent, which every workspace's
// supervisor re-executes. NodeEnvVar overrides where it is found.
const (
	nodeBinary = "microagent-node"
	NodeEnvVar = "MICROAGENT_NODE"
)

func newNodeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "node --kubeconfig FILE [--name N]",
		Short: "Join a Kubernetes cluster as a node that runs pods as workspaces",
		Long: `Register this host as a Kubernetes node (through Virtual Kubelet) and run each
pod scheduled to it as one workspace. It runs microagent-node, installed beside
microagent, with the same arguments: see "microagent node --help" for its
flags and docs/kubernetes.md for what it runs and refuses.`,
		DisableFlagParsing: true,
		RunE: func(c *cobra.Command, args []string) error {
			bin := os.Getenv(NodeEnvVar)
			if bin == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				bin = filepath.Join(filepath.Dir(exe), nodeBinary)
			}
			if _, err := os.Stat(bin); err != nil {
				return fmt.Errorf("%s not found at %s: make build (or make install) puts it beside microagent; or set %s", nodeBinary, bin, NodeEnvVar)
			}
			if g.stateDir != "" {
				args = append([]string{"--state-dir", g.stateDir}, args...)
			}
			err := syscall.Exec(bin, append([]string{bin}, args...), os.Environ())
			return errors.Join(fmt.Errorf("run %s", bin), err)
		},
	}
}
