//go:build linux

package guest

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/internal/relay"
)

// portForwardDialTimeout bounds the dial of a loopback port (a listener
// whose backlog is full does not answer at once).
const portForwardDialTimeout = 10 * time.Second

// portForward serves OpPortForward: it connects to the port on 127.0.0.1,
// answers, then relays bytes both ways until both directions have ended.
func (a *Agent) portForward(st *yamux.Stream, h *channel.Header) {
	if h.PortForward == nil || h.PortForward.Port == 0 {
		channel.WriteJSON(st, channel.FrameReply, channel.Reply{Error: "port-forward without a port"})
		return
	}
	port := h.PortForward.Port
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), portForwardDialTimeout)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			err = fmt.Errorf("nothing listens on 127.0.0.1:%d in the guest (%w)", port, channel.ErrPortRefused)
		}
		channel.WriteJSON(st, channel.FrameReply, channel.ErrorReply(err))
		return
	}
	tcp := conn.(*net.TCPConn)
	defer tcp.Close()
	if channel.WriteJSON(st, channel.FrameReply, channel.Reply{}) != nil {
		return
	}
	relay.Join(st, tcp)
}
