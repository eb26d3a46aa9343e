package qemu

import (
	"errors"
	"strconv"
	"sync"
)

// tscOnce caches the host TSC measurement: it costs ~50 ms and the rate
// does not change while the process runs (constant_tsc).
var (
	tscOnce sync.Once
	tscKHz  int
	tscErr  error
)

// HostTSCkHz returns the host's time-stamp counter rate in kHz, measured once
// per process against the monotonic clock. Under TCG the guest's TSC is the
// host's, and a microvm guest (no HPET, no PM timer) often hangs calibrating
// it, so the backend passes this value as tsc_early_khz=. It returns an error
// on hosts other than amd64.
func HostTSCkHz() (int, error) {
	tscOnce.Do(func() { tscKHz, tscErr = measureTSCkHz() })
	return tscKHz, tscErr
}

func errTSC(why string) error {
	return errors.New("measuring the host TSC frequency: " + why)
}

func itoa(i int) string { return strconv.Itoa(i) }
