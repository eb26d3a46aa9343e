//go:build !amd64

package qemu

// measureTSCkHz is unavailable off amd64: there is no host TSC that a TCG
// x86 guest would see.
func measureTSCkHz() (int, error) {
	return 0, errTSC("not an amd64 host")
}
