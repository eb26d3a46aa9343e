package qemu

import "time"

// rdtsc reads the CPU's time-stamp counter.
//
//go:noescape
func rdtsc() uint64

// tscWindow is how long the counter is compared against the monotonic
// clock; 50 ms gives an error well under 0.1%.
const tscWindow = 50 * time.Millisecond

// measureTSCkHz counts TSC ticks across tscWindow of monotonic time. Each
// end is the sample with the tightest clock bracket out of a few, so a
// preemption between the two reads cannot skew the result.
func measureTSCkHz() (int, error) {
	t0, c0 := tscSample()
	time.Sleep(tscWindow)
	t1, c1 := tscSample()
	ns := t1.Sub(t0).Nanoseconds()
	if ns <= 0 || c1 <= c0 {
		return 0, errTSC("the counter did not advance")
	}
	khz := int(float64(c1-c0) * 1e6 / float64(ns))
	// Sanity bounds: 100 MHz to 10 GHz.
	if khz < 100_000 || khz > 10_000_000 {
		return 0, errTSC("measured an implausible " + itoa(khz) + " kHz")
	}
	return khz, nil
}

// tscSample returns a (monotonic time, TSC) pair taken as close together
// as possible.
func tscSample() (time.Time, uint64) {
	var bestT time.Time
	var bestC uint64
	best := time.Duration(1<<63 - 1)
	for range 5 {
		a := time.Now()
		c := rdtsc()
		b := time.Now()
		if d := b.Sub(a); d < best {
			best = d
			bestT = a.Add(d / 2)
			bestC = c
		}
	}
	return bestT, bestC
}
