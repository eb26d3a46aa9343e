package channel

import "time"

// SetGuestTimeouts shortens the waits on guest streams for a test.
func SetGuestTimeouts(firstFrame, closeWait time.Duration) (restore func()) {
	f, c := guestFirstFrame.Load(), guestCloseWait.Load()
	guestFirstFrame.Store(int64(firstFrame))
	guestCloseWait.Store(int64(closeWait))
	return func() { guestFirstFrame.Store(f); guestCloseWait.Store(c) }
}

// SetPortForwardTimeout shortens the wait for the guest's answer to a
// port-forward for a test.
func SetPortForwardTimeout(d time.Duration) (restore func()) {
	old := portForwardReplyTimeout.Load()
	portForwardReplyTimeout.Store(int64(d))
	return func() { portForwardReplyTimeout.Store(old) }
}

// SocketPair is socketPair for the package's external tests.
var SocketPair = socketPair
