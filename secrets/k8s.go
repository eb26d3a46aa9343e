package secrets

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// K8sSocketEnv names the variable holding the path of the unix socket the
// microagent node answers k8s: references on. The node sets it in the
// environment its workspaces' supervisors resolve in.
const K8sSocketEnv = "MICROAGENT_K8S_SECRETS_SOCK"

// k8sTimeout bounds one k8s: resolution, the node's apiserver round trip
// included.
const k8sTimeout = 30 * time.Second

// Bounds of the k8s socket's frames. A request is a reference (a namespace
// of 63 bytes, a Secret name and a key of 253 each, two separators); an
// error reply is one line of text.
const (
	maxK8sRequest = 63 + 253 + 253 + 2
	maxK8sError   = 1024
)

// Reply statuses on the k8s socket: one byte, then a 4-byte big-endian
// length and that many bytes (the value, or an error message).
const (
	k8sOK byte = iota
	k8sErrNotFound
	k8sErrNoField
	k8sErrDenied
	k8sErrUnavailable
	k8sErrBadRef
	k8sErrTooLarge
	k8sErrEmpty
)

var k8sKinds = map[byte]error{
	k8sErrNotFound: ErrNotFound, k8sErrNoField: ErrNoField, k8sErrDenied: ErrDenied,
	k8sErrUnavailable: ErrUnavailable, k8sErrBadRef: ErrBadRef, k8sErrTooLarge: ErrTooLarge, k8sErrEmpty: ErrEmpty,
}

// K8sRef is a parsed k8s:NAMESPACE/SECRET#KEY reference: one key of a
// Kubernetes Secret.
type K8sRef struct {
	Namespace, Secret, Key string
}

// String returns NAMESPACE/SECRET#KEY (the part after "k8s:").
func (r K8sRef) String() string { return r.Namespace + "/" + r.Secret + "#" + r.Key }

// ParseK8sRef parses NAMESPACE/SECRET#KEY: the namespace a DNS-1123 label,
// the Secret's name a DNS-1123 subdomain, the key what Kubernetes allows
// in a Secret's data ([-._a-zA-Z0-9]+, at most 253 bytes, not "." or "..").
// Errors wrap ErrBadRef and quote nothing of ref.
func ParseK8sRef(ref string) (K8sRef, error) {
	nsName, key, ok := strings.Cut(ref, "#")
	ns, name, ok2 := strings.Cut(nsName, "/")
	if !ok || !ok2 {
		return K8sRef{}, Errorf(ErrBadRef, "k8s reference: want k8s:NAMESPACE/SECRET#KEY, e.g. k8s:default/api-token#token")
	}
	if !dnsLabel(ns) {
		return K8sRef{}, Errorf(ErrBadRef, "k8s reference: the namespace must be a DNS-1123 label (1-63 of a-z, 0-9, '-', starting and ending with a letter or digit)")
	}
	if !dnsSubdomain(name) {
		return K8sRef{}, Errorf(ErrBadRef, "k8s reference: the Secret's name must be a DNS-1123 subdomain (1-253 of a-z, 0-9, '-', '.')")
	}
	if !SecretKey(key) {
		return K8sRef{}, Errorf(ErrBadRef, "k8s reference: the key must be 1-253 of a-z, A-Z, 0-9, '-', '_', '.' (not \".\" or \"..\")")
	}
	return K8sRef{Namespace: ns, Secret: name, Key: key}, nil
}

// SecretKey reports whether key is a valid key of a Kubernetes Secret's data.
func SecretKey(key string) bool {
	if key == "" || len(key) > 253 || key == "." || key == ".." {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func dnsLabel(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (c != '-' || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}

func dnsSubdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !dnsLabel(l) {
			return false
		}
	}
	return true
}

// K8sResolver implements k8s:NAMESPACE/SECRET#KEY. It asks the microagent
// node on the unix socket named by MICROAGENT_K8S_SECRETS_SOCK, which reads
// the Secret with the node's credentials at each request (so a rotated
// Secret is seen at the next start or fetch) and answers only references a
// pod it runs declared. This package stays free of client-go: the
// supervisors that resolve are the microagent binary, which must not grow
// by the Kubernetes client; the node, which has it anyway, does the reading.
type K8sResolver struct{}

// Plaintext is false: the value lives in the cluster's Secret store.
func (K8sResolver) Plaintext() bool { return false }

// Validate checks the reference's syntax (see ParseK8sRef).
func (K8sResolver) Validate(ref string) (string, error) {
	r, err := ParseK8sRef(ref)
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

// Resolve asks the node. Without the node (the variable unset, nothing
// listening) it fails closed with ErrConfig or ErrUnavailable.
func (K8sResolver) Resolve(ctx context.Context, ref string, env LookupEnv) (*Value, error) {
	if _, err := ParseK8sRef(ref); err != nil {
		return nil, err
	}
	sock, _ := env(K8sSocketEnv)
	if sock == "" {
		return nil, Errorf(ErrConfig, "k8s:%s: %s is not set: k8s: secrets are resolved by the microagent node that runs the pod", ref, K8sSocketEnv)
	}
	ctx, cancel := context.WithTimeout(ctx, k8sTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, Errorf(ErrUnavailable, "k8s:%s: the microagent node does not answer on %s (%v): is it running?", ref, sock, oneLine(err.Error(), 300))
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	req := make([]byte, 2+len(ref))
	binary.BigEndian.PutUint16(req, uint16(len(ref)))
	copy(req[2:], ref)
	if _, err := c.Write(req); err != nil {
		return nil, Errorf(ErrUnavailable, "k8s:%s: asking the microagent node: %v", ref, oneLine(err.Error(), 300))
	}
	status, body, err := readK8sReply(c)
	if err != nil {
		return nil, Errorf(ErrUnavailable, "k8s:%s: the microagent node's answer: %v", ref, err)
	}
	if status == k8sOK {
		if len(body) == 0 {
			return nil, Errorf(ErrEmpty, "k8s:%s: the key is empty", ref)
		}
		return NewValue(body), nil
	}
	kind, ok := k8sKinds[status]
	if !ok {
		kind = ErrUnavailable
	}
	return nil, Errorf(kind, "k8s:%s: %s", ref, oneLine(string(body), maxK8sError))
}

// readK8sReply reads one reply frame; the body is a value (status k8sOK,
// at most MaxValueSize bytes) or an error message (at most maxK8sError).
func readK8sReply(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, errors.New("cut short")
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	limit := uint32(maxK8sError)
	if hdr[0] == k8sOK {
		limit = MaxValueSize
	}
	if n > limit {
		return 0, nil, fmt.Errorf("a frame of %d bytes (at most %d)", n, limit)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		clear(body)
		return 0, nil, errors.New("cut short")
	}
	return hdr[0], body, nil
}

// ReadK8sRequest reads one request from the k8s socket (the node's side)
// and returns the reference, checked (see ParseK8sRef). A frame longer
// than any valid reference is refused before it is read.
func ReadK8sRequest(r io.Reader) (K8sRef, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return K8sRef{}, Errorf(ErrBadRef, "request cut short")
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n == 0 || n > maxK8sRequest {
		return K8sRef{}, Errorf(ErrBadRef, "request of %d bytes: a reference has 1 to %d", n, maxK8sRequest)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return K8sRef{}, Errorf(ErrBadRef, "request cut short")
	}
	return ParseK8sRef(string(b))
}

// WriteK8sValue answers a request with value; the caller zeroes value.
func WriteK8sValue(w io.Writer, value []byte) error {
	if len(value) > MaxValueSize {
		return WriteK8sError(w, Errorf(ErrTooLarge, "the key holds more than %d bytes", MaxValueSize))
	}
	frame := make([]byte, 5+len(value))
	defer clear(frame)
	frame[0] = k8sOK
	binary.BigEndian.PutUint32(frame[1:], uint32(len(value)))
	copy(frame[5:], value)
	_, err := w.Write(frame)
	return err
}

// WriteK8sError answers a request with err's kind and message (one line,
// bounded). The message must hold no value: the resolver puts it in its
// error.
func WriteK8sError(w io.Writer, err error) error {
	status := k8sErrUnavailable
	for s, k := range k8sKinds {
		if errors.Is(err, k) {
			status = s
			break
		}
	}
	msg := oneLine(err.Error(), maxK8sError-8) // oneLine may add "..." and a rune
	frame := make([]byte, 5+len(msg))
	frame[0] = status
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	copy(frame[5:], msg)
	_, werr := w.Write(frame)
	return werr
}
