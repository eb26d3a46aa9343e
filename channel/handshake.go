package channel

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// maxLine bounds a handshake line; longer runs of bytes are stale data and
// are skipped.
const maxLine = 128

func greeting(nonce string) string { return fmt.Sprintf("MICROAGENT/%d %s", Version, nonce) }

// readLine reads one byte at a time, so that nothing after the newline is
// consumed: the yamux session starts right behind it.
func readLine(r io.Reader) (string, error) {
	var b [1]byte
	var line []byte
	for {
		n, err := r.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				return string(line), nil
			}
			if len(line) < maxLine {
				line = append(line, b[0])
			} else {
				line = line[:0] // too long to be ours: stale bytes
			}
		}
		if err != nil {
			return "", err
		}
	}
}

// HostHandshake sends the greeting with nonce and waits for the guest's
// acknowledgement, discarding anything else that arrives first.
func HostHandshake(rw io.ReadWriter, nonce string) error {
	g := greeting(nonce)
	if _, err := io.WriteString(rw, "\n"+g+"\n"); err != nil {
		return fmt.Errorf("channel: send greeting: %w", err)
	}
	want := g + " OK"
	for {
		line, err := readLine(rw)
		if err != nil {
			return fmt.Errorf("channel: wait for guest greeting: %w", err)
		}
		if line == want {
			return nil
		}
	}
}

// ResyncHandshake is HostHandshake for a guest whose agent may still be in
// an old session (a restored snapshot): the first greeting may be eaten by
// that session, which then fails and returns to the handshake. So the
// greeting is sent again after resend, and then at growing intervals, each
// time with a new nonce; only the acknowledgement of the latest one counts,
// and nothing is sent after it, so the session that follows starts clean.
func ResyncHandshake(rw io.ReadWriter, nonce string, resend time.Duration) error {
	var mu sync.Mutex
	attempt, done := 0, false
	current := func() string { return greeting(fmt.Sprintf("%s.%d", nonce, attempt)) }
	send := func() error {
		_, err := io.WriteString(rw, "\n"+current()+"\n")
		return err
	}
	mu.Lock()
	err := send()
	mu.Unlock()
	if err != nil {
		return fmt.Errorf("channel: send greeting: %w", err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for d := resend; ; d = min(2*d, 2*time.Second) {
			select {
			case <-stop:
				return
			case <-time.After(d):
			}
			mu.Lock()
			if done {
				mu.Unlock()
				return
			}
			attempt++
			err := send()
			mu.Unlock()
			if err != nil {
				return // the reader sees the broken connection too
			}
		}
	}()
	for {
		line, err := readLine(rw)
		if err != nil {
			return fmt.Errorf("channel: wait for guest greeting: %w", err)
		}
		mu.Lock()
		ok := line == current()+" OK"
		done = ok
		mu.Unlock()
		if ok {
			return nil
		}
	}
}

// ErrVersion is returned by GuestHandshake when the host speaks another
// protocol version.
var ErrVersion = errors.New("channel: protocol version mismatch")

// GuestHandshake waits for the host's greeting, discarding stale bytes, and
// acknowledges it. It returns io.EOF when the host is not connected.
func GuestHandshake(rw io.ReadWriter) error {
	prefix := fmt.Sprintf("MICROAGENT/%d ", Version)
	for {
		line, err := readLine(rw)
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, prefix) && len(line) > len(prefix) {
			_, err := io.WriteString(rw, line+" OK\n")
			return err
		}
		if strings.HasPrefix(line, "MICROAGENT/") {
			return fmt.Errorf("%w: host sent %q, agent speaks %d", ErrVersion, line, Version)
		}
	}
}
