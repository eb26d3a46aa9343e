package image

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Kinds of failure, for errors.Is. Errors returned by this package are one
// line and name the reference and the registry host contacted.
var (
	// ErrNotFound: the registry has no such repository or tag.
	ErrNotFound = errors.New("image not found")
	// ErrUnauthorized: the registry refused the credentials (or their absence).
	ErrUnauthorized = errors.New("not authorized")
	// ErrUnreachable: the registry could not be reached.
	ErrUnreachable = errors.New("registry unreachable")
	// ErrInsecure: plain http to a host that is not allowed it.
	ErrInsecure = errors.New("plain http not allowed")
	// ErrPlatform: the image offers no variant for the wanted platform.
	ErrPlatform = errors.New("platform not available")
	// ErrDigestMismatch: a blob's content does not match its digest.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrNotStored: the reference is not in the local store.
	ErrNotStored = errors.New("not in the image store")
	// ErrInUse: removing the image would take it from a workspace or a
	// snapshot pinned to it.
	ErrInUse = errors.New("image in use")
	// ErrTooLarge: the image is larger than the caller allows
	// (PullOptions.MaxBytes).
	ErrTooLarge = errors.New("image too large")
	// ErrBadArchive: a file given to Load is not an image archive.
	ErrBadArchive = errors.New("not an image archive")
)

// tooLarge refuses an image of size bytes over a cap of max.
func tooLarge(label string, size, max int64) error {
	return kindErr(ErrTooLarge, "image %s is %.1f MiB (manifest, config and compressed layers), more than the %.1f MiB allowed: pick a smaller image",
		label, float64(size)/(1<<20), float64(max)/(1<<20))
}

// insecureError is returned by the transport guard for a refused http
// request.
type insecureError struct{ host string }

func (e *insecureError) Error() string {
	return fmt.Sprintf("plain http to %s refused: only loopback addresses and registries listed in %s (or %s insecure_registries) may use http",
		e.host, EnvInsecure, ConfigFile)
}

func (e *insecureError) Unwrap() error { return ErrInsecure }

// classify turns an error from go-containerregistry into a one-line error
// naming ref and the contacted host.
func classify(ctx context.Context, err error, ref, host string) error {
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("pull %s from %s: %w", ref, host, ctxErr)
	}
	var ie *insecureError
	if errors.As(err, &ie) {
		return fmt.Errorf("pull %s from %s: %w", ref, host, ie)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		codes := map[transport.ErrorCode]bool{}
		for _, d := range te.Errors {
			codes[d.Code] = true
		}
		switch {
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden ||
			codes[transport.UnauthorizedErrorCode] || codes[transport.DeniedErrorCode]:
			return kindErr(ErrUnauthorized, "pull %s: not authorized by registry %s (the image may not exist, or needs credentials: run \"docker login %s\")",
				ref, host, host)
		case te.StatusCode == http.StatusNotFound || codes[transport.ManifestUnknownErrorCode] ||
			codes[transport.NameUnknownErrorCode] || codes[transport.BlobUnknownErrorCode]:
			return kindErr(ErrNotFound, "pull %s: image not found on registry %s (check the name and tag)", ref, host)
		}
		return fmt.Errorf("pull %s: registry %s answered: %s", ref, host, oneLine(te.Error()))
	}
	if errors.Is(err, ErrDigestMismatch) || errors.Is(err, ErrPlatform) {
		return err
	}
	if isNetworkError(err) {
		return kindErr(ErrUnreachable, "pull %s: cannot reach registry %s: %s", ref, host, oneLine(rootCause(err)))
	}
	// Local failures (a full disk, a malformed image) keep their cause.
	return fmt.Errorf("pull %s from %s: %w", ref, host, err)
}

// isNetworkError tells failures to talk to a registry from local ones.
func isNetworkError(err error) bool {
	var ue *url.Error
	var oe *net.OpError
	var de *net.DNSError
	var ce *tls.CertificateVerificationError
	var he tls.RecordHeaderError
	var ae x509.UnknownAuthorityError
	var hn x509.HostnameError
	return errors.As(err, &ue) || errors.As(err, &oe) || errors.As(err, &de) || errors.As(err, &ce) ||
		errors.As(err, &he) || errors.As(err, &ae) || errors.As(err, &hn) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}

// rootCause strips go-containerregistry's and net/http's wrapping (and the
// repetition of its parallel https/http pings) down to the network error
// that says what went wrong ("dial tcp ...: connection refused").
func rootCause(err error) string {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.Error()
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return opErr.Error()
	}
	return err.Error()
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\n", "; ")
}

// kindError is a message that matches one of the Err* kinds with errors.Is.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func kindErr(kind error, format string, args ...any) error {
	return &kindError{msg: fmt.Sprintf(format, args...), kind: kind}
}
