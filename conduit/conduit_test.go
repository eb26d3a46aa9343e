package conduit

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/secrets"
)

// The limiter refuses over either bound at once, counts the refusals and
// refills at its rate.
func TestLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := NewLimiter(2, 10, 3)
	l.now = func() time.Time { return now }
	r1, err1 := l.Acquire()
	r2, err2 := l.Acquire()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := l.Acquire(); !errors.Is(err, ErrLimited) || !secrets.IsDenied(err) {
		t.Fatalf("a third at once: %v", err)
	}
	r1()
	r1() // twice is once
	r2()
	if _, err := l.Acquire(); err != nil { // the burst's last token
		t.Fatal(err)
	}
	if _, err := l.Acquire(); !errors.Is(err, ErrLimited) {
		t.Fatalf("past the burst: %v", err)
	}
	now = now.Add(150 * time.Millisecond) // 1.5 tokens
	r, err := l.Acquire()
	if err != nil {
		t.Fatalf("after the refill: %v", err)
	}
	r()
	if got := l.Refused(); got != 2 {
		t.Fatalf("refused %d, want 2", got)
	}
}

// What the guest reads of a failed fetch is the name and the kind.
func TestFetchErrorText(t *testing.T) {
	detail := "helper /home/u/.op/x failed: stderr: token hvs.SECRET"
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&secrets.Error{Name: "A", Err: secrets.Errorf(secrets.ErrHelper, "%s", detail)}, "secret A: secret helper failed"},
		{audit.ErrWithheld, "secret A: " + audit.ErrWithheld.Error()},
		{secrets.Errorf(secrets.ErrDenied, "%w: %s", ErrLimited, detail), "secret A: " + ErrLimited.Error()},
		{errors.New(detail), "secret A: the fetch failed on the host"},
	} {
		got := (&FetchError{Name: "A", Err: tc.err}).Error()
		if !strings.HasPrefix(got, tc.want) || strings.Contains(got, "hvs.") || strings.Contains(got, "/home") {
			t.Errorf("%v: the guest reads %q, want %q...", tc.err, got, tc.want)
		}
	}
	if got := (&FetchError{Name: "A\nB", Err: secrets.ErrNotFound}).Error(); strings.Contains(got, "A\nB") {
		t.Errorf("an invalid name echoed: %q", got)
	}
}
