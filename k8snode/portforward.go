package k8snode

import (
	"context"
	"io"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"

	"github.com/microagent-dev/microagent/internal/relay"
	"github.com/microagent-dev/microagent/workspace"
)

// portForwardDial bounds connecting to the guest's port (the supervisor
// bounds the guest's answer itself).
const portForwardDial = 2 * time.Minute

// PortForward joins the kubelet's stream (kubectl port-forward) to TCP
// port on the loopback of the pod's workspace until both directions have
// ended: the pod's network plays no part, as the port is reached through
// the guest agent. Each side's end is passed on as a half-close; the
// kubelet's idle timeout ends a forward nobody uses.
func (p *provider) PortForward(ctx context.Context, namespace, podName string, port int32, stream io.ReadWriteCloser) error {
	if port < 1 || port > 65535 {
		return errdefs.InvalidInputf("port %d is not a TCP port (1-65535)", port)
	}
	r, err := p.running(namespace, podName, "")
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, portForwardDial)
	conn, err := workspace.DialPort(dctx, p.cfg.Home, r.ws, uint16(port))
	cancel()
	if err != nil {
		return err // the kubelet's message names the pod and the port
	}
	defer conn.Close()
	relay.Join(stream, conn)
	return nil
}
