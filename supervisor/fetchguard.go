package supervisor

import (
	"fmt"
	"log"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/secrets"
)

const (
	// floodWindow is the span over which failed fetches of one kind are
	// coalesced into one record.
	floodWindow = 10 * time.Second
)

// floodGate is the supervisor's conduit.Gater: every ok fetch is recorded
// (fsynced) before its value leaves, as audit.Log.Gate does, but failures
// are coalesced: the first of a kind (name, result, reason kind) in a
// window is recorded, with its reason, in the audit log and the supervisor
// log at once, and the rest of the window's are counted and recorded as
// one "412 more denied fetches of X in 10s" at its end. A denied-fetch
// flood thus writes two records per kind per window instead of one per
// fetch.
type floodGate struct {
	log      *audit.Log // nil: auditing off (the supervisor log still coalesces)
	lg       *log.Logger
	declared func(name string) bool
	window   time.Duration

	mu    sync.Mutex
	open  map[floodKey]*floodCount
	timer *time.Timer
}

// floodKey groups failures. Declared names (a bounded set) are kept apart;
// names the guest made up are one group, so inventing names does not make
// more records.
type floodKey struct {
	name   string // "" for every undeclared name
	result audit.Result
	kind   string
}

type floodCount struct {
	name   string // the recorded name: the first one seen
	n      int
	reason string
}

func newFloodGate(l *audit.Log, lg *log.Logger, declared func(string) bool) *floodGate {
	return &floodGate{log: l, lg: lg, declared: declared, window: floodWindow, open: map[floodKey]*floodCount{}}
}

// Gate implements conduit.Gater.
func (g *floodGate) Gate(name string, access audit.Access, v *secrets.Value, resolveErr error) error {
	if resolveErr == nil {
		err := g.log.Gate(name, access, v, nil)
		if err != nil {
			g.lg.Printf("on-demand fetch of %s withheld: %v", shownName(name), err)
		}
		return err
	}
	v.Zero()
	g.failed(name, access, resolveErr)
	return resolveErr
}

// shownName is name for the host's logs, unless the guest sent something
// that is not a name.
func shownName(name string) string {
	if secrets.ValidName(name) {
		return name
	}
	return "(invalid name)"
}

func (g *floodGate) failed(name string, access audit.Access, err error) {
	k := floodKey{result: audit.ResultOf(err), kind: kindOf(err)}
	if g.declared(name) {
		k.name = name
	}
	g.mu.Lock()
	if c := g.open[k]; c != nil {
		c.n++
		g.mu.Unlock()
		return
	}
	g.open[k] = &floodCount{name: shownName(name), reason: secrets.Reason(err)}
	if g.timer == nil {
		g.timer = time.AfterFunc(g.window, g.flush)
	}
	g.mu.Unlock()
	g.lg.Printf("on-demand fetch of %s %s: %v", shownName(name), k.result, err)
	g.append(audit.Record{Name: shownName(name), Access: access, Result: k.result, Reason: secrets.Reason(err)})
}

func kindOf(err error) string {
	if k := secrets.Kind(err); k != nil {
		return k.Error()
	}
	return ""
}

// coalescedFormat starts the reason of a record that counts many fetches
// (after a first record of its own: "N more"); coalescedReason finds it.
const coalescedFormat = "%d more %s fetches"

var coalescedReason = regexp.MustCompile(`^(\d+) more \S+ fetches `)

// FetchTally sums a log's on-demand records, each coalesced record
// counted as the fetches it stands for ("412 more denied fetches of X in
// 10s ...").
type FetchTally struct {
	OK, Failed int
	// FailedRecords is how many records hold the Failed fetches.
	FailedRecords int
}

// TallyFetches sums recs' on-demand records.
func TallyFetches(recs []audit.Record) FetchTally {
	var t FetchTally
	for _, r := range recs {
		switch {
		case r.Access != audit.OnDemand:
		case r.Result == audit.OK:
			t.OK++
		default:
			t.FailedRecords++
			t.Failed++
			if m := coalescedReason.FindStringSubmatch(r.Reason); m != nil {
				n, _ := strconv.Atoi(m[1])
				t.Failed += n - 1
			}
		}
	}
	return t
}

// flush records the counts of the window that ended.
func (g *floodGate) flush() {
	g.mu.Lock()
	open := g.open
	g.open, g.timer = map[floodKey]*floodCount{}, nil
	g.mu.Unlock()
	for k, c := range open {
		if c.n == 0 {
			continue
		}
		what := c.name
		if k.name == "" {
			what = "undeclared names (the first: " + c.name + ")"
		}
		reason := fmt.Sprintf(coalescedFormat+" of %s in %s (coalesced): %s", c.n, k.result, what, g.window, c.reason)
		g.lg.Printf("on-demand fetches: %s", reason)
		g.append(audit.Record{Name: c.name, Access: audit.OnDemand, Result: k.result, Reason: reason})
	}
}

// close records what the current window counted so far.
func (g *floodGate) close() {
	g.mu.Lock()
	if g.timer != nil {
		g.timer.Stop()
	}
	g.mu.Unlock()
	g.flush()
}

func (g *floodGate) append(r audit.Record) {
	if g.log == nil {
		return
	}
	if err := g.log.Append(r); err != nil {
		g.lg.Printf("secrets audit: %v", err)
	}
}
