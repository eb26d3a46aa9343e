//go:build goexperiment.runtimesecret

package channel

import "runtime/secret"

// secretDo runs f and erases the stack, registers and (once unreachable)
// heap allocations it used: the private key and AEAD key schedule inside
// crypto/hpke included.
func secretDo(f func()) { secret.Do(f) }
