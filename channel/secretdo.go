//go:build !goexperiment.runtimesecret

package channel

// secretDo runs f. Built with GOEXPERIMENT=runtimesecret (see
// secretdo_runtime.go) it also erases the stack, registers and heap
// allocations f used, which reaches what the code cannot zero itself: the
// X25519 private key and the AEAD key schedule inside crypto/hpke. Without
// it those bytes stay in freed heap slots until reused or returned to the
// kernel (the agent forces that with debug.FreeOSMemory; spans still
// partly in use keep them). They open nothing but the ciphertext of one
// finished delivery.
func secretDo(f func()) { f() }
