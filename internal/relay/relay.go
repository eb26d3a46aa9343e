// Package relay joins two byte streams both ways, as a port-forward does
// at each of its hops (the guest agent, the supervisor, the node, the
// CLI): each direction's end is passed on as a half-close, and a
// direction that fails takes the whole connection down.
package relay

import (
	"io"
	"sync"
)

// Join copies a to b and b to a until both directions have ended and
// returns the bytes read from each. A direction whose source reads EOF
// half-closes its destination (CloseWrite when it has one, else Close: a
// yamux or SPDY stream's Close is its half-close) and the other direction
// goes on. A direction that fails (a reset, a write to a peer that has
// gone) closes both, so the other ends too. The caller closes a and b
// afterwards.
func Join(a, b io.ReadWriteCloser) (fromA, fromB int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); fromB = pipe(a, b) }()
	fromA = pipe(b, a)
	wg.Wait()
	return fromA, fromB
}

// pipe copies src to dst, then half-closes dst; a failure closes both.
func pipe(dst, src io.ReadWriteCloser) int64 {
	n, err := io.Copy(dst, src)
	if err != nil {
		dst.Close()
		src.Close()
		return n
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	return n
}
