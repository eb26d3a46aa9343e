// Package credswap holds what the two sides of the secret swap
// (--secret-egress, vmm.Swap) share: the workspace CA, generated and kept
// on the host (the supervisor) and used by the network helper to mint the
// certificates the guest is shown, and the placeholders the guest holds
// instead of values. It is a leaf: the network helper (vmm/usernet/intercept)
// and the supervisor both import it, and it imports neither.
//
// # Placeholders
//
// A placeholder is PlaceholderPrefix ("MICROAGENT_PLACEHOLDER_") and 40
// lower-case hex digits (an HMAC-SHA256 of the secret's name keyed by the
// boot's random nonce): 63 characters of [A-Z0-9a-f_], unique per boot and name,
// visibly fake and easy to search for, and shaped like the opaque
// alphanumeric tokens clients accept without a format check (no spaces,
// quotes, colons or padding; long enough for length checks). Clients that
// insist on a provider's own prefix (sk-..., ghp_...) reject it.
package credswap
