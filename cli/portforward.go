package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/relay"
	"github.com/microagent-dev/microagent/workspace"
)

// portSpec is one [LOCAL:]GUEST argument; Local 0 picks a free port.
type portSpec struct{ Local, Guest uint16 }

// parsePortSpec parses LOCAL:GUEST, :GUEST (any free local port) or PORT
// (the same port on both sides), as kubectl port-forward does.
func parsePortSpec(s string) (portSpec, error) {
	port := func(what, v string) (uint16, error) {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return 0, usageError("port-forward %q: the %s port %q is not a port (1-65535)", s, what, v)
		}
		return uint16(n), nil
	}
	local, guest, two := strings.Cut(s, ":")
	if !two {
		p, err := port("guest", s)
		return portSpec{p, p}, err
	}
	g, err := port("guest", guest)
	if err != nil || local == "" {
		return portSpec{0, g}, err
	}
	l, err := port("local", local)
	return portSpec{l, g}, err
}

func newPortForwardCmd(g *globals) *cobra.Command {
	var addresses []string
	c := &cobra.Command{
		Use:   "port-forward NAME [LOCAL:]GUEST...",
		Short: "Forward local ports to TCP ports on a running workspace's loopback",
		Long: `Listen on local ports and forward each connection to a TCP port on the
guest's loopback (127.0.0.1 in the workspace), through the workspace's
supervisor and guest agent: it needs no network in the workspace (an isolated
one works) and reaches servers bound to 127.0.0.1 only. LOCAL:GUEST listens on
LOCAL, :GUEST on a free port, GUEST on the same port. Runs until interrupted
(Ctrl-C), printing "Forwarding from ADDRESS:LOCAL -> GUEST" for each listener
(a JSON object each with --json) and a line on stderr for each connection the
guest refuses. At most 64 connections are open at once per workspace.

Examples:
  microagent port-forward app 8080
  microagent port-forward app 9000:80 :5432 --address 127.0.0.1,::1`,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: completeFirst(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			name := args[0]
			var specs []portSpec
			for _, a := range args[1:] {
				s, err := parsePortSpec(a)
				if err != nil {
					return err
				}
				specs = append(specs, s)
			}
			var ips []net.IP
			for _, a := range addresses {
				ip := net.ParseIP(a)
				if a == "localhost" {
					ip = net.IPv4(127, 0, 0, 1)
				}
				if ip == nil {
					return usageError("port-forward: --address %q is not an IP address (or localhost)", a)
				}
				ips = append(ips, ip)
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			inf, err := workspace.Status(c.Context(), h, name)
			if err != nil {
				return wsError(err)
			}
			if inf.State != workspace.Running {
				return wsError(fmt.Errorf("%w: workspace %s is %s: run \"microagent start %s\" first", workspace.ErrNotRunning, name, inf.State, name))
			}
			return wsError(g.portForward(c.Context(), h, name, ips, specs))
		},
	}
	c.Flags().StringSliceVar(&addresses, "address", []string{"127.0.0.1"}, "local addresses to listen on (comma-separated or repeated; anything but loopback opens the guest's port to the network)")
	return c
}

// portForward listens for every spec on every address, then forwards each
// connection until ctx ends (nil: an interrupt is this command's end) or
// the workspace stops running.
func (g *globals) portForward(ctx context.Context, h home.Home, name string, ips []net.IP, specs []portSpec) error {
	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	var lns []net.Listener
	defer func() {
		cancel(nil) // ends the forwarded connections
		for _, ln := range lns {
			ln.Close()
		}
		wg.Wait()
	}()
	for _, s := range specs {
		for _, ip := range ips {
			ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: int(s.Local)})
			if err != nil {
				return fmt.Errorf("port-forward: listen on %s: %w", net.JoinHostPort(ip.String(), strconv.Itoa(int(s.Local))), err)
			}
			lns = append(lns, ln)
			local := ln.Addr().(*net.TCPAddr)
			if g.json {
				json.NewEncoder(g.stdout).Encode(map[string]any{"address": local.IP.String(), "local": local.Port, "guest": s.Guest})
			} else {
				fmt.Fprintf(g.stdout, "Forwarding from %s -> %d\n", local, s.Guest)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				g.serveForward(ctx, cancel, h, name, ln, s.Guest)
			}()
		}
	}
	<-ctx.Done()
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// serveForward accepts connections on ln and joins each to guest port on
// the workspace until ln is closed; a workspace that is no longer running
// ends the command (through cancel).
func (g *globals) serveForward(ctx context.Context, cancel context.CancelCauseFunc, h home.Home, name string, ln net.Listener, port uint16) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			remote, err := workspace.DialPort(ctx, h, name, port)
			switch {
			case err == nil:
			case errors.Is(err, workspace.ErrNotRunning):
				cancel(err) // the command's error
				return
			default:
				if ctx.Err() == nil {
					fmt.Fprintf(g.stderr, "microagent: %s -> %d: %v\n", ln.Addr(), port, err)
				}
				return
			}
			defer remote.Close()
			stop := context.AfterFunc(ctx, func() { c.Close(); remote.Close() })
			defer stop()
			relay.Join(c, remote)
		}()
	}
}
