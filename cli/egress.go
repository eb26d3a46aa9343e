package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/vmm/usernet"
	"github.com/microagent-dev/microagent/workspace"
)

func newEgressCmd(g *globals) *cobra.Command {
	o := workspace.LogsOptions{Egress: true}
	c := &cobra.Command{
		Use:   "egress NAME",
		Short: "Print what a workspace's network allowed and denied",
		Long: `Print a workspace's egress log: every connection and DNS query its guest
tried, with time, protocol, destination (and name), verdict and reason, as
the user network decided it on the host (the guest can neither forge nor
erase it). One line each, e.g.

  2026-12-02T21:30:00Z deny tcp 203.0.113.7:443: not in the allowlist: ...

--follow keeps printing until the workspace stops; --json prints the log's
own JSON lines. The log is kept across boots and rotated by size (the part
before the last rotation is logs/egress.log.1 in the workspace's folder).`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNth(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			o.Name = args[0]
			lines := &lineSplitter{fn: func(line []byte) error { return printEvent(g.stdout, line, g.json) }}
			err = workspace.LogsFunc(c.Context(), h, o, func(_ workspace.LogSource, b []byte) error { return lines.write(b) })
			return wsError(err)
		},
	}
	c.Flags().BoolVarP(&o.Follow, "follow", "f", false, "keep printing new decisions until the workspace stops")
	c.AddCommand(newEgressChangeCmd(g, "allow"), newEgressChangeCmd(g, "revoke"))
	return c
}

// newEgressChangeCmd is "egress allow" or "egress revoke".
func newEgressChangeCmd(g *globals, verb string) *cobra.Command {
	short, long := "Add names to a workspace's allowlist", `Add names (a host, or .DOMAIN for a domain and every name in it, as
--egress-allow takes them) to the allowlist of a workspace created with
one (--egress-allow, --egress-allow-file or --egress none). The list is
recorded in the workspace (its next starts, restores and forks use it) and,
when it runs, put in force at once: new connections and DNS queries follow
it. A workspace created without an allowlist reaches every public address
already, so there is nothing to add to.`
	if verb == "revoke" {
		short, long = "Remove names from a workspace's allowlist", `Remove names from a workspace's allowlist, as they are listed. Recorded
and put in force as "egress allow" is: new connections and DNS queries to
the name are refused at once, addresses handed out for it earlier included;
connections already open stay open until they end (halt the workspace to
cut them). Revoking the last name leaves nothing allowed (as --egress
none), never the open default.`
	}
	return &cobra.Command{
		Use:   verb + " NAME HOST...",
		Short: short,
		Long:  long,
		Args:  cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			ch := workspace.EgressChange{Name: args[0]}
			if verb == "allow" {
				ch.Allow = args[1:]
			} else {
				ch.Revoke = args[1:]
			}
			res, err := workspace.ChangeEgress(c.Context(), h, ch)
			if err != nil {
				return wsError(err)
			}
			if g.json {
				return g.printJSON(res)
			}
			now := "nothing (outbound traffic is off)"
			if len(res.AllowNames) > 0 {
				now = strings.Join(res.AllowNames, " ")
			}
			when := "in force now"
			if !res.Live {
				when = "in force from its next start"
			}
			_, err = fmt.Fprintf(g.stdout, "Workspace %s allows %s (%s)\n", args[0], now, when)
			return err
		},
	}
}

// printEvent prints one log line: as it is with --json, else in words. A
// line that is not an event (a torn write after a crash) is printed as it
// is, not dropped.
func printEvent(w io.Writer, line []byte, asJSON bool) error {
	var ev usernet.Event
	if asJSON || json.Unmarshal(line, &ev) != nil {
		_, err := fmt.Fprintf(w, "%s\n", line)
		return err
	}
	if ev.Proto == usernet.PolicyProto {
		_, err := fmt.Fprintf(w, "%s %s\n", ev.Time.Format(time.RFC3339), ev.Reason)
		return err
	}
	dst := ev.Dst.String()
	if ev.Name != "" {
		dst += " " + ev.Name
	}
	verdict, msg := ev.Verdict, ev.Reason
	if ev.Closed {
		verdict, msg = "closed", fmt.Sprintf("%d bytes out, %d in, %gs", ev.BytesOut, ev.BytesIn, ev.Seconds)
	}
	if ev.Error != "" {
		msg += " (failed: " + ev.Error + ")"
	}
	_, err := fmt.Fprintf(w, "%s %s %s %s: %s\n", ev.Time.Format(time.RFC3339), verdict, ev.Proto, dst, msg)
	return err
}

// lineSplitter hands whole lines of the pieces written to it to fn.
type lineSplitter struct {
	fn   func([]byte) error
	part []byte
}

func (l *lineSplitter) write(b []byte) error {
	l.part = append(l.part, b...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			return nil
		}
		line := l.part[:i]
		if err := l.fn(line); err != nil {
			return err
		}
		l.part = l.part[i+1:]
	}
}
