package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microagent-dev/microagent/credswap"
	"github.com/microagent-dev/microagent/vmm/usernet"
	"github.com/microagent-dev/microagent/vmm/usernet/intercept"
)

// serverFirstWait is how long a flow to port 443 or 80 waits for the
// guest's first bytes before it is relayed as a protocol where the server
// speaks first. A flow to a name the swap covers waits coveredFirstWait:
// its client speaks first (TLS or http), and relaying it unintercepted
// because the guest was slow (16 TLS clients starting at once on one
// emulated CPU took more than 2 s) would hand it the real host's
// certificate, which it rejects.
const (
	serverFirstWait  = 2 * time.Second
	coveredFirstWait = 30 * time.Second
)

// newSwap builds the secret swap of cfg (nil: none); its events go to
// the decision log.
func newSwap(cfg *usernet.SwapConfig, src intercept.Source, events *eventLog) (*intercept.Interceptor, error) {
	if cfg == nil {
		return nil, nil
	}
	if src == nil {
		return nil, errors.New("secret swap: no source of values was given to the network")
	}
	ca, err := credswap.LoadCA(cfg.CACert, cfg.CAKey)
	if err != nil {
		return nil, fmt.Errorf("secret swap: %w", err)
	}
	rules, err := intercept.NewRules(cfg.Rules)
	if err != nil {
		return nil, err
	}
	roots, err := intercept.Roots(cfg.ExtraRoots)
	if err != nil {
		return nil, fmt.Errorf("secret swap: %w", err)
	}
	return intercept.New(intercept.Config{CA: ca, Rules: rules, Source: src, Roots: roots,
		Events: func(e intercept.Event) { events.writeSwap(e) }})
}

// writeSwap logs a swap or a flag.
func (l *eventLog) writeSwap(e intercept.Event) {
	verdict := usernet.Allow
	if e.Result == intercept.ResultUnresolved {
		verdict = usernet.Deny // the request was answered 502, not sent
	}
	l.write(usernet.Event{Proto: "tcp", Name: e.Host, Verdict: verdict, Reason: e.String(), Swap: &e})
}

// relaySwap relays a flow to port 443 or 80, or to a name the swap covers,
// while the secret swap is on:
// TLS to a host a rule covers goes to the interceptor; the placeholders
// in a plain http request's first head are flagged; anything else is
// relayed as usual (the name check of an allowed name's stand-in
// included). It returns the bytes each way and false when the flow was
// denied.
func (n *Network) relaySwap(guest, upstream net.Conn, d usernet.Decision, ev usernet.Event) (out, in int64, ok bool) {
	buf := make([]byte, maxPeek)
	wait := serverFirstWait
	if d.Name != "" && n.swap.Covers(d.Name) {
		wait = coveredFirstWait
	}
	guest.SetReadDeadline(time.Now().Add(wait))
	k, _ := guest.Read(buf)
	guest.SetReadDeadline(time.Time{})
	if k == 0 {
		// Nothing from the guest (yet): a protocol where the server
		// speaks first, relayed as it would be without the swap.
		if d.Name != "" {
			return n.relayNamed(guest, upstream, ev)
		}
		out, in = relay(guest, upstream)
		return out, in, true
	}
	head, name, err := peekFrom(guest, buf, k)
	if d.Name != "" {
		if why := n.nameRefused(name, err); why != "" {
			ev.Verdict, ev.Reason, ev.Name = usernet.Deny, why, name
			n.events.write(ev)
			return 0, 0, false
		}
	}
	isTLS := head[0] == 0x16
	if err == nil && name != "" && isTLS && n.swap.Covers(name) {
		return n.intercept(guest, upstream, head, name, d, ev)
	}
	if !isTLS {
		host := name
		if host == "" {
			host = ev.Dst.Addr().String()
		}
		n.swap.FlagPlain(host, head)
	}
	if _, err := upstream.Write(head); err != nil {
		return int64(len(head)), 0, true
	}
	out, in = relay(guest, upstream)
	return out + int64(len(head)), in, true
}

// intercept hands the flow to the interceptor: head (what the peek read)
// is given back to it first, the connection already dialed is its first
// upstream, and more are dialed to the same destination when it needs
// them.
func (n *Network) intercept(guest, upstream net.Conn, head []byte, name string, d usernet.Decision, ev usernet.Event) (out, in int64, ok bool) {
	var mu sync.Mutex
	first := upstream
	dial := func(ctx context.Context) (net.Conn, error) {
		mu.Lock()
		c := first
		first = nil
		mu.Unlock()
		if c != nil {
			return c, nil
		}
		return n.dial(ctx, "tcp", d.Dial)
	}
	g := &swapConn{Conn: guest, head: head}
	if err := n.swap.Serve(context.Background(), g, name, dial); err != nil {
		// A client that pins certificates ends here, visibly.
		ev.Error = "secret swap: " + err.Error()
		n.events.write(ev)
	}
	return g.read.Load(), g.written.Load(), true
}

// swapConn is the guest's connection with the peeked bytes given back
// first; it counts what it carries.
type swapConn struct {
	net.Conn
	mu            sync.Mutex
	head          []byte
	read, written atomic.Int64
}

func (c *swapConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if len(c.head) > 0 {
		k := copy(b, c.head)
		c.head = c.head[k:]
		c.mu.Unlock()
		c.read.Add(int64(k))
		return k, nil
	}
	c.mu.Unlock()
	k, err := c.Conn.Read(b)
	c.read.Add(int64(k))
	return k, err
}

func (c *swapConn) Write(b []byte) (int, error) {
	k, err := c.Conn.Write(b)
	c.written.Add(int64(k))
	return k, err
}
