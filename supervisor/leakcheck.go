package supervisor

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/microagent-dev/microagent/internal/fsutil"
	"github.com/microagent-dev/microagent/leakscan"
)

// delivered remembers, as fingerprints only, every materialized value this
// boot handed to the guest (including values since rotated), so that a
// snapshot can prove it holds no copy of any of them.
type delivered struct {
	mu    sync.Mutex
	names []string
	fps   []leakscan.Fingerprint
}

// add fingerprints one value; the caller still owns (and zeroes) it.
func (d *delivered) add(name string, value []byte) {
	fp, err := leakscan.New(value)
	if err != nil {
		return // empty or all zeros: nothing a scan could tell from free memory
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, have := range d.fps {
		if have == fp && d.names[i] == name {
			return // the same value delivered again (a rehydration)
		}
	}
	d.names = append(d.names, name)
	d.fps = append(d.fps, fp)
}

func (d *delivered) snapshot() ([]string, []leakscan.Fingerprint) {
	if d == nil {
		return nil, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.names...), append([]leakscan.Fingerprint(nil), d.fps...)
}

// leakCheck scans the files a snapshot writes, as they are copied, for
// the delivered values.
type leakCheck struct {
	names []string
	fps   []leakscan.Fingerprint
	runs  []*scanRun
}

type scanRun struct {
	label string
	pw    *io.PipeWriter
	bytes int64
	done  chan struct{}
	hits  []leakscan.Hit
	err   error
}

func newLeakCheck(d *delivered) *leakCheck {
	names, fps := d.snapshot()
	return &leakCheck{names: names, fps: fps}
}

// visit returns the copy visitor for one file (nil when there is nothing
// to look for: the copy then stays in the kernel).
func (l *leakCheck) visit(label string) fsutil.VisitFunc {
	if len(l.fps) == 0 {
		return nil
	}
	pr, pw := io.Pipe()
	r := &scanRun{label: label, pw: pw, done: make(chan struct{})}
	l.runs = append(l.runs, r)
	go func() {
		defer close(r.done)
		r.hits, r.err = leakscan.Scan(pr, l.fps)
		pr.CloseWithError(r.err) // unblock the copy if the scan gave up
	}()
	return func(_ int64, p []byte) error {
		n, err := pw.Write(p)
		r.bytes += int64(n)
		return err
	}
}

// check ends the scans and fails when any found a value: the error names
// the secrets and the files, never a value.
func (l *leakCheck) check() error {
	var found []string
	var errs []error
	for _, r := range l.runs {
		r.pw.Close()
		<-r.done
		if r.err != nil {
			errs = append(errs, fmt.Errorf("scan the %s: %w", r.label, r.err))
		}
		for _, h := range r.hits {
			found = append(found, fmt.Sprintf("%s in the %s at offset %d", l.names[h.Index], r.label, h.Offset))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("the secret-leak scan failed, snapshot refused: %w", err)
	}
	if len(found) > 0 {
		sort.Strings(found)
		if len(found) > 5 {
			found = append(found[:5], fmt.Sprintf("and %d more", len(found)-5))
		}
		return fmt.Errorf("snapshot refused: the saved machine still holds a copy of a delivered secret value (%s); nothing was kept", strings.Join(found, "; "))
	}
	return nil
}

// summary says what was scanned.
func (l *leakCheck) summary() string {
	if len(l.fps) == 0 {
		return "no materialized secret was delivered to this boot"
	}
	var parts []string
	for _, r := range l.runs {
		parts = append(parts, fmt.Sprintf("%s %.1f MiB", r.label, float64(r.bytes)/(1<<20)))
	}
	return fmt.Sprintf("%s searched for %d delivered values: no copy", strings.Join(parts, ", "), len(l.fps))
}
