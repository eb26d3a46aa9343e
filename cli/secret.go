package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/secrets"
)

// secretCheckResult is one line of "secret check".
type secretCheckResult struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Source  string `json:"source,omitempty"`
	Bytes   int    `json:"bytes,omitempty"`
	Warning string `json:"warning,omitempty"`
	// Hosts are a --secret-egress declaration's.
	Hosts []string `json:"hosts,omitempty"`
	Error string   `json:"error,omitempty"`
}

func newSecretCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "secret",
		Short: "Check secret references and read secrets audit logs",
	}
	var egress bool
	check := &cobra.Command{
		Use:   "check [--egress] NAME=<scheme>:<ref>[@HOST,...]...",
		Short: "Resolve secret references and report their sizes, never their values",
		Long: `Resolve each NAME=<scheme>:<ref> as a start would and print one line per
entry: "NAME ok source=<scheme> bytes=<n>" (with a warning for plaintext
schemes) or "NAME error <reason>". Values are never printed. Exits non-zero
when any entry fails. With --egress every argument is a --secret-egress
declaration, NAME=<scheme>:<ref>@HOST[,HOST...], and the line ends with
hosts=HOST,... Schemes: ` + strings.Join(secrets.Schemes(), ", ") + `.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var decls secrets.Declarations
			results := make([]secretCheckResult, 0, len(args))
			failed := 0
			for i, arg := range args {
				r := secretCheckOne(c, &decls, i, arg, egress)
				if !r.OK {
					failed++
				}
				results = append(results, r)
				if !g.json {
					printSecretCheck(g, r)
				}
			}
			if g.json {
				if err := g.printJSON(results); err != nil {
					return err
				}
			}
			if failed > 0 {
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("%d of %d secret references failed", failed, len(args))}
			}
			return nil
		},
	}

	check.Flags().BoolVar(&egress, "egress", false, "the arguments are --secret-egress declarations (NAME=<scheme>:<ref>@HOST[,HOST...])")
	var (
		verify, printHead bool
		expectHead        string
	)
	auditCmd := &cobra.Command{
		Use:   "audit WORKSPACE",
		Short: "Print a workspace's secrets audit log, or verify its hash chain",
		Long: `Print one line per recorded secret access: "<time> <name> <access> <result>"
(--json: the records). With --verify, check the log's hash chain and report
the first broken record.

The chain is not keyed: it shows a record changed by someone who did not
rebuild the chain, not by whoever can write the file (they can rewrite it
whole). To make that evident too, keep the head somewhere they cannot
write: --head prints the hash of the last record (after checking the
chain); later, --verify --expect-head HASH checks that the log still leads
through that record, so nothing up to it was rewritten, removed or cut off.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNth(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			ws := args[0]
			if !secretWorkspaceArgOK(ws) {
				return usageError("invalid workspace name %q", ws)
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			path := audit.PathFor(h, ws)
			if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
				if _, derr := os.Stat(h.Path(audit.WorkspacesDir, ws)); errors.Is(derr, fs.ErrNotExist) {
					return fmt.Errorf("no workspace %q in %s", ws, h.Root)
				}
				return fmt.Errorf("workspace %s has no secrets audit log (%s): auditing is enabled by creating the workspace with --secrets-audit", ws, path)
			}
			if printHead && (verify || expectHead != "") {
				return usageError("--head prints the head; --verify [--expect-head HASH] checks the log: give one")
			}
			if printHead {
				rep, err := audit.Verify(path)
				if err != nil {
					return err
				}
				if !rep.OK() {
					return fmt.Errorf("secrets audit log of %s is broken at record %d: %s (no head to export)", ws, rep.FirstBad, rep.Reason)
				}
				if g.json {
					return g.printJSON(map[string]any{"head": rep.Head, "records": rep.Records})
				}
				fmt.Fprintln(g.stdout, rep.Head)
				return nil
			}
			if verify || expectHead != "" {
				verifyFn := audit.Verify
				if expectHead != "" {
					if err := audit.CheckHead(expectHead); err != nil {
						return usageError("--expect-head: %v", err)
					}
					verifyFn = func(p string) (audit.Report, error) { return audit.VerifyHead(p, expectHead) }
				}
				rep, err := verifyFn(path)
				if err != nil {
					return err
				}
				if g.json {
					if err := g.printJSON(struct {
						OK bool `json:"ok"`
						audit.Report
					}{rep.OK(), rep}); err != nil {
						return err
					}
				} else if rep.OK() && expectHead != "" {
					fmt.Fprintf(g.stdout, "ok: %d records, hash chain intact, leads through the expected head (record %d; %d recorded since)\n", rep.Records, rep.HeadAt, rep.Records-rep.HeadAt)
				} else if rep.OK() {
					fmt.Fprintf(g.stdout, "ok: %d records, hash chain intact (this alone does not show a rewrite by whoever can write the log: see --head)\n", rep.Records)
				}
				switch {
				case rep.HeadMissing:
					return fmt.Errorf("secrets audit log of %s does not lead to the expected head: %s", ws, rep.Reason)
				case !rep.OK():
					return fmt.Errorf("secrets audit log of %s is broken at record %d: %s", ws, rep.FirstBad, rep.Reason)
				}
				return nil
			}
			recs, readErr := audit.Read(path)
			if g.json {
				if recs == nil {
					recs = []audit.Record{}
				}
				if err := g.printJSON(recs); err != nil {
					return err
				}
			} else {
				for _, r := range recs {
					fmt.Fprintln(g.stdout, r.String())
				}
			}
			return readErr
		},
	}
	auditCmd.Flags().BoolVar(&verify, "verify", false, "check the hash chain and report the first broken record")
	auditCmd.Flags().BoolVar(&printHead, "head", false, "print the chain's head hash, to keep where the log's writers cannot change it")
	auditCmd.Flags().StringVar(&expectHead, "expect-head", "", "with --verify: require the chain to lead through this head hash (from --head)")
	c.AddCommand(check, auditCmd)
	return c
}

// secretCheckOne declares and resolves one "secret check" argument. The value is
// zeroed before it returns; only its length survives.
func secretCheckOne(c *cobra.Command, decls *secrets.Declarations, i int, arg string, egress bool) secretCheckResult {
	label := fmt.Sprintf("#%d", i+1) // an argument too malformed to name safely
	fail := func(err error) secretCheckResult {
		r := secretCheckResult{Name: label, Error: secrets.Reason(err)}
		var se *secrets.Error
		if errors.As(err, &se) {
			if se.Name != "" {
				r.Name = se.Name
			}
			r.Source = se.Scheme
		}
		return r
	}
	parse := secrets.ParseDecl
	if egress {
		parse = parseEgressDecl
	}
	d, err := parse(arg)
	if err != nil {
		return fail(err)
	}
	label = d.Name
	if err := decls.Add(d); err != nil {
		return fail(err)
	}
	d = decls.Secrets[len(decls.Secrets)-1] // the canonical form
	v, err := secrets.ResolveDecl(c.Context(), d, os.LookupEnv)
	if err != nil {
		return fail(err)
	}
	n := v.Len()
	v.Zero()
	r := secretCheckResult{Name: d.Name, OK: true, Source: d.Ref.Scheme, Bytes: n, Hosts: d.EgressHosts}
	if secrets.IsPlaintext(d.Ref.Scheme) {
		r.Warning = secrets.PlaintextWarning(d.Ref.Scheme)
	}
	return r
}

func printSecretCheck(g *globals, r secretCheckResult) {
	if !r.OK {
		fmt.Fprintf(g.stdout, "%s error %s\n", r.Name, r.Error)
		return
	}
	line := fmt.Sprintf("%s ok source=%s bytes=%d", r.Name, r.Source, r.Bytes)
	if len(r.Hosts) > 0 {
		line += " hosts=" + strings.Join(r.Hosts, ",")
	}
	if r.Warning != "" {
		line += " " + r.Warning
	}
	fmt.Fprintln(g.stdout, line)
}

// secretWorkspaceArgOK rejects names that would leave the workspaces folder.
func secretWorkspaceArgOK(ws string) bool {
	if ws == "" || ws == "." || ws == ".." || len(ws) > 255 || strings.ContainsAny(ws, "/\\") {
		return false
	}
	for i := 0; i < len(ws); i++ {
		if ws[i] < 0x20 || ws[i] == 0x7f {
			return false
		}
	}
	return true
}
