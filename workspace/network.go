package workspace

import (
	"errors"
	"fmt"

	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"
)

// ErrNetwork marks a network setting that can never work (a malformed or
// contradictory one: publishing a port of an isolated workspace, a port
// named twice, ...). A port that is merely taken on the host right now is
// not one: it is reported by Start.
var ErrNetwork = errors.New("invalid network")

// checkNetwork validates a network given to Create.
func checkNetwork(name string, n vmm.Network) error {
	if err := n.Validate(); err != nil {
		return fmt.Errorf("workspace %s: %w: %w", name, ErrNetwork, err)
	}
	return nil
}

// startNetwork is the network a start gives the VM and the guest setup
// that goes with it. A published port that is taken on the host fails the
// start here, before anything is launched.
func (w *wsDir) startNetwork(m *Manifest) (*vmm.Network, error) {
	c, err := m.Network()
	if err != nil {
		return nil, err
	}
	n := c.VMM()
	if err := guestboot.CheckForwards(n.Forwards); err != nil {
		return nil, fmt.Errorf("workspace %s: %w; the workspace was not started", w.Name, err)
	}
	if !n.Isolated() {
		n.EgressLog = w.Path(wsdir.LogsDir, EgressLogName)
	}
	return &n, nil
}

// EgressLogName is the user network's decision log in a workspace's logs
// folder: every connection and DNS query the guest tried, allowed or
// denied and why, kept across boots (rotated by size: the part before is
// EgressLogName + usernet.RotatedSuffix). "microagent egress" prints it.
const EgressLogName = "egress.log"
