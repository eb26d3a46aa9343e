package workspace

import (
	"context"
	"errors"
	"net"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/supervisor"
)

// DialPort connects to TCP port on the loopback (127.0.0.1) of running
// workspace name, through its supervisor and the guest agent: the guest's
// network plays no part, so an isolated workspace serves it too. The
// connection carries that TCP connection's bytes; it is a *net.UnixConn,
// whose CloseWrite reaches the guest as a half-close (the other direction
// then lives at most 30 s more, the channel's stream close timeout; so
// does the host's after the guest's half-close). A port nothing
// listens on fails with an error wrapping channel.ErrPortRefused; at most
// supervisor.MaxForwards connections are open at once per workspace (more
// fail wrapping ErrBusy). ctx bounds the connecting only.
func DialPort(ctx context.Context, h home.Home, name string, port uint16) (net.Conn, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if port == 0 {
		return nil, errors.New("port-forward: port 0 is not a port: give the guest's TCP port (1-65535)")
	}
	w := newWS(h, name)
	return w.stream(ctx, "port-forward", func(c *supervisor.Client) (net.Conn, error) { return c.PortForward(ctx, port) })
}
