package channel

import "time"

// SetGuestTimeouts shortens the waits on guest streams for a test.
func SetGuestTimeouts(firstFrame, closeWait time.Duration) (restore func()) {
	f, c := guestFirstFrame.Load(), guestCloseWait.Load()
	guestFirstFrame.Store(int64(firstFrame))
	guestCloseWait.Store(int64(closeWait))
	return func() { guestFirstFrame.Store(f); guestCloseWait.Store(c) }
}

// SocketPair is socketPair for the package's external tests.
var SocketPair = socketPair
