// Command microagent-node is "microagent node": a Kubernetes node
// (through Virtual Kubelet) that runs each pod scheduled to it as one
// workspace. It is a program of its own, run by "microagent node" from
// beside it, so that the Kubernetes client libraries it links (tens of
// MB, and their start-up work) are not in microagent, which every
// workspace's supervisor re-executes.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/k8snode"
)

// version is set by make build (-X main.version).
var version = "dev"

// usage is a usage error: exit 2, as microagent's.
type usage struct{ error }

func usageError(format string, args ...any) error { return usage{fmt.Errorf(format, args...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := newNodeCmd()
	c.SilenceUsage, c.SilenceErrors = true, true
	if err := c.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "microagent: %v\n", err)
		var u usage
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// supervisorBinary is the microagent beside this program: it runs the
// workspaces' supervisors, which this program cannot (it is not the
// microagent binary the supervisor's command line names).
func supervisorBinary() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(filepath.Dir(exe), "microagent")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("microagent not found at %s: it runs the workspaces' supervisors; make build (or make install) puts it beside microagent-node", bin)
	}
	return bin, nil
}

func newNodeCmd() *cobra.Command {
	var stateDir string
	var cfg k8snode.Config
	c := &cobra.Command{
		Use:   "microagent-node --kubeconfig FILE [--name N]",
		Short: "Join a Kubernetes cluster as a node that runs pods as workspaces",
		Long: `Register this host as a Kubernetes node (through Virtual Kubelet) and run each
pod scheduled to it as one workspace: the pod's image, its one container's
command and args (Kubernetes' Entrypoint/Cmd rules), env values, workingDir and
resources (limits, else requests; none: the default profile). kubectl logs,
exec and delete work. See docs/kubernetes.md.

The node is tainted microagent.dev/microvm=true:NoSchedule: only pods that
tolerate it land here. Its capacity is this host's CPUs (--cpus: fewer), its
memory less 1 GiB (--memory-mib: less), and --max-pods workspaces; the
scheduler places pods by it. A pod this node cannot run as written (more than one
container, init containers, volumes, Secrets in env, probes ...) is refused
with an event and marked Failed, never half-run.

The kubelet API (--listen) accepts only client certificates from --client-ca
(default: the kubeconfig's cluster CA), each request authorized by the
apiserver. Runs until interrupted; the workspaces stay as they are. Started
again with the same name and state directory, it first kills and deletes the
workspaces whose pods are no longer bound to it, and starts afresh those that
still are.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if cfg.Kubeconfig == "" {
				return usageError("--kubeconfig FILE is needed: the node's credentials for the cluster")
			}
			if err := k8snode.ValidateNodeName(cfg.NodeName); err != nil {
				return usageError("%v (--name)", err)
			}
			switch {
			case cfg.MaxPods < 1:
				return usageError("--max-pods %d: give at least 1", cfg.MaxPods)
			case cfg.CPUs < 0:
				return usageError("--cpus %d: give a positive number (or 0: all of this host's)", cfg.CPUs)
			case cfg.MemoryMiB < 0:
				return usageError("--memory-mib %d: give a positive number (or 0: this host's memory less 1 GiB)", cfg.MemoryMiB)
			}
			if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
				return usageError("--tls-cert and --tls-key go together")
			}
			h, err := home.Resolve(stateDir)
			if err != nil {
				return err
			}
			cfg.Home, cfg.Version = h, version
			if cfg.Executable, err = supervisorBinary(); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "microagent: node %s joining the cluster in %s\n", cfg.NodeName, cfg.Kubeconfig)
			return k8snode.Run(c.Context(), cfg)
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig with the node's credentials")
	f.StringVar(&cfg.NodeName, "name", k8snode.DefaultNodeName(), "the node's name")
	f.StringVar(&cfg.Address, "address", "", "IP the apiserver reaches this node on (default: this host's address towards the apiserver)")
	f.StringVar(&cfg.Listen, "listen", ":10250", "address of the kubelet API (logs, exec)")
	f.StringVar(&cfg.ClientCA, "client-ca", "", "PEM CA file for the kubelet API's clients (default: the kubeconfig's cluster CA)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "the kubelet API's serving certificate (default: self-signed)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "the serving certificate's key")
	f.IntVar(&cfg.MaxPods, "max-pods", k8snode.DefaultMaxPods, "most pods (workspaces) this node runs")
	f.IntVar(&cfg.CPUs, "cpus", 0, "CPUs offered to the scheduler (default 0: all of this host's)")
	f.Int64Var(&cfg.MemoryMiB, "memory-mib", 0, "MiB of memory offered to the scheduler (default 0: this host's less 1 GiB)")
	f.StringVar(&stateDir, "state-dir", "", "state directory (default $MICROAGENT_HOME, else $XDG_DATA_HOME/microagent)")
	c.Flags().SetInterspersed(true)
	return c
}
