// Package agentbuild builds the guest agent the way every build of it must
// be made: static, stripped, and with the runtimesecret experiment, which
// lets the agent erase the key material its secret deliveries used (see
// channel's secretDo). The Makefile's build target uses the same settings.
package agentbuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
)

// Package is the agent's main package, relative to the module root.
const Package = "./cmd/microagent-agent"

// Env is the build environment the agent needs on top of the caller's.
var Env = []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOEXPERIMENT=runtimesecret"}

// Build compiles pkg (Package, or a helper built alike) from the module at
// root into out.
func Build(ctx context.Context, root, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), Env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}
