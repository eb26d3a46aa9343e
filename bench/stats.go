package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// stat summarises samples of one measurement.
type stat struct {
	n                 int
	min, median, p99  time.Duration
	mean, max, stddev time.Duration
}

func summarize(samples []time.Duration) stat {
	if len(samples) == 0 {
		return stat{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	// Nearest-rank p99: with few samples it is the maximum.
	rank := int(math.Ceil(0.99*float64(n))) - 1
	var sum float64
	for _, d := range s {
		sum += float64(d)
	}
	mean := sum / float64(n)
	var sq float64
	for _, d := range s {
		sq += (float64(d) - mean) * (float64(d) - mean)
	}
	return stat{
		n: n, min: s[0], median: med, p99: s[max(rank, 0)], max: s[n-1],
		mean: time.Duration(mean), stddev: time.Duration(math.Sqrt(sq / float64(n))),
	}
}

// collect maps each sample through f.
func collect[T any](xs []T, f func(T) time.Duration) []time.Duration {
	out := make([]time.Duration, 0, len(xs))
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

// dur prints a duration with a unit that suits its size.
func dur(d time.Duration) string {
	switch {
	case d < 0:
		return "n/a"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

// mbps is throughput in MB/s (10^6 bytes) of size bytes in d.
func mbps(size int64, d time.Duration) float64 {
	if d <= 0 {
		return math.NaN()
	}
	return float64(size) / 1e6 / d.Seconds()
}
