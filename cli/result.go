package cli

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/channel"
)

// The exit codes of run and exec beyond the guest command's own, as
// docker's: a script tells microagent's failures from the command's.
const (
	ExitTimedOut    = 124 // the command outlived --timeout and was killed
	ExitOwnFailure  = 125 // microagent itself failed: flags, image, workspace, boot
	ExitInterrupted = 130 // microagent was interrupted before the command ended
)

// exitCodeTable is the table run's and exec's --help end with (and the
// README repeats).
const exitCodeTable = `
Exit codes:
  0      the command succeeded
  1-123  the command's own exit code
  124    the command timed out (--timeout) and was killed
  125    microagent itself failed (bad flags, missing image or workspace,
         boot failure); nothing ran, or what ran was stopped
  126    the command could not be run (not executable, bad working
         directory or user)
  127    the command was not found
  128+N  the command was killed by signal N (137: SIGKILL)
  130    microagent was interrupted (Ctrl-C, SIGTERM) before the command ended`

// resultHelp describes run's and exec's --json object, whose timings
// differ.
func resultHelp(timings string) string {
	return `With --json, stdout is one JSON object once the command has ended and nothing
else: exitCode, signal, timedOut, error (the command could not run), stdout
and stderr (each {data, encoding, bytes, truncated}: data is UTF-8 text, or
base64 when the output is not valid UTF-8, as encoding says; at most
--output-limit bytes of each are kept, ` + fmt.Sprintf("%d MiB", DefaultOutputLimit>>20) + ` by default) and timings
(` + timings + `). microagent's own errors go to stderr.
`
}

// DefaultOutputLimit bounds each of stdout and stderr that --json holds in
// memory: the object is built only once the command has ended.
const DefaultOutputLimit = 1 << 20

// maxOutputLimit is the largest --output-limit: both streams, base64
// grown, are held in memory at once.
const maxOutputLimit = 1 << 30

// ownFailures makes every failure of c that is not the guest command's
// exit 125 (interruptions stay 130): flag and argument errors, and errors
// RunE returns other than those exitStatus makes of the command's end.
func ownFailures(c *cobra.Command) {
	args, run := c.Args, c.RunE
	c.Args = func(c *cobra.Command, a []string) error { return asOwnFailure(args(c, a)) }
	c.RunE = func(c *cobra.Command, a []string) error { return asOwnFailure(run(c, a)) }
	c.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &ExitError{Code: ExitOwnFailure, Err: fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
}

func asOwnFailure(err error) error {
	var ee *ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee) && (ee.guest || ee.Code == ExitInterrupted):
		return err
	case errors.As(err, &ee):
		return &ExitError{Code: ExitOwnFailure, Err: ee.Err}
	}
	return &ExitError{Code: ExitOwnFailure, Err: err}
}

// capture keeps the first limit bytes written to it and counts the rest,
// so a guest that prints without end costs no more memory than --json
// allows. Writes never fail: the guest's stream is drained either way.
type capture struct {
	mu    sync.Mutex
	limit int
	buf   []byte
	total int64
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += int64(len(p))
	if room := c.limit - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(len(p), room)]...)
	}
	return len(p), nil
}

// streamJSON is one captured stream in --json's object.
type streamJSON struct {
	// Data is the output: UTF-8 text, or base64 when Encoding says so.
	Data string `json:"data"`
	// Encoding is "utf-8" or "base64" (the output is not valid UTF-8).
	Encoding string `json:"encoding"`
	// Bytes is how many bytes the command wrote, kept or not.
	Bytes int64 `json:"bytes"`
	// Truncated says Data holds only the first --output-limit bytes.
	Truncated bool `json:"truncated"`
}

// json returns what the stream captured. A truncation that cut a UTF-8
// character in two drops its first bytes, so text stays text.
func (c *capture) json() streamJSON {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := streamJSON{Bytes: c.total, Truncated: c.total > int64(len(c.buf)), Encoding: "utf-8"}
	b := c.buf
	if s.Truncated && !utf8.Valid(b) {
		for k := 1; k < utf8.UTFMax && k <= len(b); k++ {
			if !utf8.FullRune(b[len(b)-k:]) && utf8.Valid(b[:len(b)-k]) {
				b = b[:len(b)-k]
				break
			}
		}
	}
	if utf8.Valid(b) {
		s.Data = string(b)
	} else {
		s.Data, s.Encoding = base64.StdEncoding.EncodeToString(b), "base64"
	}
	return s
}

// resultJSON is the one object run --json and exec --json print.
type resultJSON struct {
	ExitCode int         `json:"exitCode"`
	Signal   int         `json:"signal"`
	TimedOut bool        `json:"timedOut"`
	Error    string      `json:"error,omitempty"`
	Stdout   streamJSON  `json:"stdout"`
	Stderr   streamJSON  `json:"stderr"`
	Timings  timingsJSON `json:"timings"`
}

// timingsJSON are a run's or an exec's durations, in seconds.
type timingsJSON struct {
	// BootSeconds is run's boot, from VMM start to the agent's answer.
	BootSeconds float64 `json:"bootSeconds,omitempty"`
	// TotalSeconds is the command's whole time, microagent's included.
	TotalSeconds float64 `json:"totalSeconds"`
}

// jsonOutput is --json's capture of a run or exec: --output-limit bounds
// each stream.
type jsonOutput struct {
	limit          int
	stdout, stderr *capture
	start          time.Time
}

// addOutputLimit adds --output-limit to c.
func (o *jsonOutput) addOutputLimit(c *cobra.Command) {
	c.Flags().IntVar(&o.limit, "output-limit", DefaultOutputLimit,
		"with --json, keep at most this many bytes of each of stdout and stderr (the rest is counted and dropped)")
}

// begin checks the flags and, with --json, starts capturing: the streams
// then go to the returned writers instead of the CLI's.
func (o *jsonOutput) begin(g *globals, c *cobra.Command) error {
	o.start = time.Now()
	if !g.json {
		if c.Flags().Changed("output-limit") {
			return usageError("--output-limit applies to --json's captured output: add --json, or drop it")
		}
		return nil
	}
	if o.limit < 0 || o.limit > maxOutputLimit {
		return usageError("--output-limit %d: give 0 to %d bytes", o.limit, maxOutputLimit)
	}
	o.stdout, o.stderr = &capture{limit: o.limit}, &capture{limit: o.limit}
	return nil
}

// streams are where the command's output goes: the captures with --json,
// else the CLI's own stdout and stderr.
func (o *jsonOutput) streams(g *globals) (stdout, stderr io.Writer) {
	if o.stdout != nil {
		return o.stdout, o.stderr
	}
	return g.stdout, g.stderr
}

// exitStatus turns a guest exit status into this command's result; with
// --json it prints the one result object (boot is run's boot time).
func exitStatus(g *globals, o *jsonOutput, es channel.ExitStatus, argv0 string, timeout, boot time.Duration) error {
	if g.json {
		v := resultJSON{
			ExitCode: es.Code, Signal: es.Signal, TimedOut: es.TimedOut, Error: es.Error,
			Stdout: o.stdout.json(), Stderr: o.stderr.json(),
			Timings: timingsJSON{BootSeconds: boot.Seconds(), TotalSeconds: time.Since(o.start).Seconds()},
		}
		if err := g.printJSON(v); err != nil {
			return err
		}
	}
	switch {
	case es.Error != "":
		return &ExitError{Code: es.Code, Err: fmt.Errorf("%s: %s", argv0, es.Error), guest: true}
	case es.TimedOut:
		return &ExitError{Code: ExitTimedOut, Err: fmt.Errorf("the command timed out after %s and was killed", timeout), guest: true}
	case es.Code != 0:
		return &ExitError{Code: es.Code, guest: true}
	}
	return nil
}
