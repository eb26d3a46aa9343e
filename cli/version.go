package cli

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/vmm"
)

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go version and the VMM found (also: microagent --version)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return printVersion(c.Context(), g)
		},
	}
}

// Version is the release version, set at build time with -ldflags.
var Version = "dev"

// Commit is the source's revision, set at build time with -ldflags; when
// empty, the VCS stamp go build records (unless -buildvcs=false) is used.
var Commit = ""

// versionJSON is what version --json prints.
type versionJSON struct {
	Version string `json:"version"`
	// Commit is the source's VCS revision, "-dirty" appended when the
	// tree had changes; empty when the build recorded none.
	Commit string `json:"commit,omitempty"`
	Go     string `json:"go"`
	// VMM is the backend's own program check ("qemu"): found, where,
	// which version, or why not.
	VMM vmmJSON `json:"vmm"`
}

type vmmJSON struct {
	Name   string `json:"name"`
	Found  bool   `json:"found"`
	Detail string `json:"detail"`
}

func printVersion(ctx context.Context, g *globals) error {
	v := versionJSON{Version: Version, Commit: commit(), Go: runtime.Version(), VMM: findVMM(ctx)}
	if g.json {
		return g.printJSON(v)
	}
	fmt.Fprintln(g.stdout, "microagent", v.Version)
	if v.Commit != "" {
		fmt.Fprintln(g.stdout, "commit:", v.Commit)
	}
	fmt.Fprintln(g.stdout, "go:", v.Go)
	state := "not found"
	if v.VMM.Found {
		state = "found"
	}
	fmt.Fprintf(g.stdout, "%s: %s (%s)\n", v.VMM.Name, state, v.VMM.Detail)
	return nil
}

// commit is Commit, else the VCS revision go build recorded.
func commit() string {
	if Commit != "" {
		return Commit
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "-dirty"
		}
	}
	if rev == "" {
		return ""
	}
	return rev + dirty
}

// findVMM reports the default backend's check of its own program, the one
// named after the backend (doctor runs all of them).
func findVMM(ctx context.Context) vmmJSON {
	b, err := vmm.Default()
	if err != nil {
		return vmmJSON{Name: "vmm", Detail: err.Error()}
	}
	v := vmmJSON{Name: b.Name(), Detail: "the backend cannot check its program: run \"microagent doctor\""}
	if hc, ok := b.(vmm.HostChecker); ok {
		for _, ch := range hc.HostChecks(ctx) {
			if ch.Name == b.Name() {
				v.Found, v.Detail = ch.OK, ch.Detail
			}
		}
	}
	return v
}
