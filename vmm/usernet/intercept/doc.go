// Package intercept is the network helper's secret swap (issue #13): the
// guest holds a placeholder instead of a secret, and on an HTTPS request
// to a host the secret belongs to the helper terminates the guest's TLS
// with a per-workspace CA, puts the value in place of the placeholder in
// the request's headers and forwards the request to the real host over
// TLS verified against the host's roots. The guest never holds a value,
// so a prompt-injected agent that exfiltrates its key leaks a useless
// string.
//
// The helper holds no secret reference: a Source (the supervisor, over a
// descriptor) gives each value per request, and the interceptor zeroes its
// bytes once the header is built. Go's header values are strings, which
// cannot be zeroed: the one string per header that holds a value lives
// until the garbage collector takes it (swapIn says what is done instead).
//
// Placeholders and the workspace CA are package credswap's, shared with
// the host side that hands them to the guest.
//
// # What is swapped
//
// Every occurrence in any request header (Authorization Bearer, x-api-key,
// a custom header...), and inside an Authorization Basic credential (the
// base64 of user:password is decoded, swapped and encoded again). Not the
// URL, the body or trailers: there the placeholder goes out as it is.
// Signing schemes that never send the key (AWS SigV4, HMAC-signed
// requests) cannot work through a swap.
//
// A placeholder of a rule whose hosts do not cover the request's host goes
// out unchanged and is flagged (ResultFlagged: "placeholder of NAME sent
// to HOST"). Only TLS connections to a host some rule covers are
// terminated; every other flow stays end to end, so placeholders in those
// are seen only when they travel in plain http (Rules.Find).
//
// # Limits
//
// A client that pins certificates fails the handshake, visibly. A host
// that echoes request headers back (an error page quoting Authorization,
// an echo endpoint) shows the guest the value: the rules should name only
// the hosts that need it. One guest connection serves one host: a request
// whose Host is another gets 421.
package intercept
