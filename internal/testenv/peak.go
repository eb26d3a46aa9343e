package testenv

import (
	"os"
	"time"
)

// PeakEntries samples, every 5 ms until the returned stop is called, how
// many entries dir holds, and stop returns the most it saw: a test's
// helper processes each hold a file there while they run, so this is how
// many ran at once.
func PeakEntries(dir string) (stop func() int) {
	done, peakc := make(chan struct{}), make(chan int)
	go func() {
		peak := 0
		for {
			if es, _ := os.ReadDir(dir); len(es) > peak {
				peak = len(es)
			}
			select {
			case <-done:
				peakc <- peak
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() int {
		close(done)
		return <-peakc
	}
}
