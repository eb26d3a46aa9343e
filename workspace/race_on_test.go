//go:build race

package workspace

// raceBuild: the supervisor binary is built with the race detector too, so
// the supervisor's goroutines are checked as well.
const raceBuild = true
