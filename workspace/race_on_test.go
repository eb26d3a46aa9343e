//go:build race

package workspace

// raceBuild: the microagent binary is built with the race detector too, so
// the goroutines of the CLI and of the supervisors it starts are checked as
// well (the supervisors the tests start are this test binary, racy alike).
const raceBuild = true
