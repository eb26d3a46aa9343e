package channel

import (
	"errors"
	"fmt"
	"io"
	"strings"
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
