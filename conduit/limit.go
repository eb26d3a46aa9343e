package conduit

import (
	"errors"
	"sync"
	"time"

	"github.com/microagent-dev/microagent/secrets"
)

// ErrLimited marks an on-demand fetch refused because the guest asked for
// more than the Limiter allows; it is a denial (secrets.ErrDenied), and
// the guest may retry later.
var ErrLimited = errors.New("too many on-demand fetches at once or per second: retry later")

// Limiter bounds the on-demand fetches one guest can make the host
// resolve: how many at once (each may be a helper process or a backend
// request) and how many per second (a token bucket). A fetch over either
// bound is refused at once, never queued: a flood costs the host a
// refusal each, not a waiting goroutine.
type Limiter struct {
	maxInFlight int
	perSecond   float64
	burst       float64
	now         func() time.Time

	mu       sync.Mutex
	inFlight int
	tokens   float64
	last     time.Time
	refused  int64
}

// Bounds on what one guest's on-demand fetches cost the host. A workload
// fetches a handful of secrets at start and a few per request; a guest
// asking for more is refused (and the refusals counted), never queued.
const (
	// FetchesAtOnce bounds the resolutions in flight: each may be a
	// helper process (pass, op, sops ...) or a Vault request.
	FetchesAtOnce = 4
	// FetchesPerSecond and FetchBurst are the sustained and the momentary
	// rate: at most 36,000 ok audit records (each fsynced) an hour.
	FetchesPerSecond = 10
	FetchBurst       = 20
)

// NewFetchLimiter is a Limiter of the on-demand fetch bounds.
func NewFetchLimiter() *Limiter { return NewLimiter(FetchesAtOnce, FetchesPerSecond, FetchBurst) }

// NewLimiter allows maxInFlight fetches at once and perSecond a second on
// average, burst at a time.
func NewLimiter(maxInFlight int, perSecond float64, burst int) *Limiter {
	return &Limiter{maxInFlight: maxInFlight, perSecond: perSecond, burst: float64(burst), tokens: float64(burst), now: time.Now}
}

// Acquire admits one fetch, whose end the caller reports with release; a
// fetch over a bound fails with an error wrapping ErrLimited and
// secrets.ErrDenied.
func (l *Limiter) Acquire() (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.perSecond)
	}
	l.last = now
	switch {
	case l.inFlight >= l.maxInFlight:
		l.refused++
		return nil, secrets.Errorf(secrets.ErrDenied, "%w (%d fetches in progress, at most %d at once)", ErrLimited, l.inFlight, l.maxInFlight)
	case l.tokens < 1:
		l.refused++
		return nil, secrets.Errorf(secrets.ErrDenied, "%w (more than %g a second)", ErrLimited, l.perSecond)
	}
	l.tokens--
	l.inFlight++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.inFlight--
			l.mu.Unlock()
		})
	}, nil
}

// Refused is the number of fetches refused so far.
func (l *Limiter) Refused() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refused
}
