package channel

import (
	"context"
	"errors"
	"fmt"
	"io"
	pathpkg "path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// Secret operations. Values never travel inside JSON, nor in plaintext:
// each rides sealed in its own FrameSealed frame (see seal.go).
const (
	// OpSecrets (host to guest) materializes secrets in the guest's tmpfs
	// and declares the names that may be fetched on demand.
	OpSecrets = "secrets"
	// OpPurge (host to guest) overwrites every materialized secret with
	// zeros, removes it, and confirms.
	OpPurge = "purge"
	// OpFetch (guest to host) asks for one on-demand secret.
	OpFetch = "fetch"
)

// MaxSecret bounds one secret value (one sealed frame).
const MaxSecret = MaxFrame - SealOverhead

// SecretItem describes one materialized secret; its value follows sealed,
// in a FrameSealed frame of exactly Size+SealOverhead bytes.
type SecretItem struct {
	Name string `json:"name"`
	Size int    `json:"size"`
	// Env sets the value as the variable Name in every exec's environment
	// (a Kubernetes env var from a Secret), besides the file.
	Env bool `json:"env,omitempty"`
	// Mount and Path make the value appear at Mount/Path too (a Kubernetes
	// secret volume): the guest mounts a tmpfs of its own at Mount and
	// links Path in it to the file in /run/secrets, so the value is kept
	// (and purged) in one place. See CheckSecretTarget.
	Mount string `json:"mount,omitempty"`
	Path  string `json:"path,omitempty"`
}

// MaxSecretTarget bounds Mount/Path, as PATH_MAX does less tightly.
const MaxSecretTarget = 1024

// CheckSecretTarget checks where a secret may appear besides /run/secrets:
// mount an absolute, clean directory that is not /, not in /proc, /sys or
// /dev, and neither holds nor lies in /run/secrets; path a clean relative
// path inside it (no "..", no empty or over-long element), the whole at
// most MaxSecretTarget bytes. Both host and guest check it: the guest's
// agent, root, must not be steered onto the system's own files.
func CheckSecretTarget(mount, path string) error {
	if len(mount)+1+len(path) > MaxSecretTarget {
		return fmt.Errorf("secret target longer than %d bytes", MaxSecretTarget)
	}
	if hasControl(mount) || hasControl(path) {
		return errors.New("secret target contains a control character")
	}
	if !strings.HasPrefix(mount, "/") || pathpkg.Clean(mount) != mount || mount == "/" {
		return fmt.Errorf("secret mount %q: want an absolute, clean directory other than /", mount)
	}
	for _, bad := range []string{"/proc", "/sys", "/dev"} {
		if mount == bad || strings.HasPrefix(mount, bad+"/") {
			return fmt.Errorf("secret mount %q: not under %s", mount, bad)
		}
	}
	const secretsDir = "/run/secrets"
	if mount == secretsDir || strings.HasPrefix(mount, secretsDir+"/") || strings.HasPrefix(secretsDir, mount+"/") {
		return fmt.Errorf("secret mount %q: must not hold or lie in %s", mount, secretsDir)
	}
	if path == "" || strings.HasPrefix(path, "/") || pathpkg.Clean(path) != path {
		return fmt.Errorf("secret path %q: want a clean path relative to its mount", path)
	}
	for _, el := range strings.Split(path, "/") {
		if el == ".." || el == "." || len(el) > 255 {
			return fmt.Errorf("secret path %q: no \".\" or \"..\" elements, each at most 255 bytes", path)
		}
	}
	return nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// SecretsRequest is the body of OpSecrets.
type SecretsRequest struct {
	Items []SecretItem `json:"items"`
	// OnDemand lists the names the guest may fetch; the guest serves its
	// secrets socket only when there are any.
	OnDemand []string `json:"onDemand,omitempty"`
	// Placeholders stand for secrets that never enter the guest (the
	// network swaps them for the values on the way out, --secret-egress):
	// each is written to /run/secrets/NAME as a materialized secret is and
	// set as the variable NAME in every exec's environment. They are not
	// secret, so they travel in the clear. A delivery replaces the
	// previous ones; a purge removes them.
	Placeholders []Placeholder `json:"placeholders,omitempty"`
	// EgressCA is the PEM certificate of the workspace CA the network
	// terminates those TLS connections with: the guest adds it to its
	// trust stores (see guest.CABundlePaths) and points SSL_CERT_FILE,
	// REQUESTS_CA_BUNDLE and NODE_EXTRA_CA_CERTS at it in every exec.
	EgressCA []byte `json:"egressCA,omitempty"`
}

// MaxPlaceholder bounds a placeholder's length, MaxEgressCA the CA's PEM.
const (
	MaxPlaceholder = 256
	MaxEgressCA    = 16 << 10
)

// Placeholder is one secret's stand-in in the guest.
type Placeholder struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// FetchRequest is the body of OpFetch.
type FetchRequest struct {
	Name string `json:"name"`
	// PublicKey is the guest's fresh key for this fetch; the value comes
	// back sealed to it.
	PublicKey []byte `json:"publicKey"`
}

// PurgeReply confirms a purge: the names whose files were zeroed and removed.
type PurgeReply struct {
	Purged []string `json:"purged"`
}

// DeliverSecrets sends values (values[i] belongs to items[i]) to the guest,
// which writes them to /run/secrets before replying. The guest answers the
// header with a fresh public key and each value goes sealed to it. The
// caller still owns and zeroes values.
func (c *Client) DeliverSecrets(ctx context.Context, req SecretsRequest, values [][]byte) error {
	if len(values) != len(req.Items) {
		return errors.New("channel: secrets: one value per item")
	}
	for i := range req.Items {
		req.Items[i].Size = len(values[i])
		if len(values[i]) > MaxSecret {
			return fmt.Errorf("channel: secret %s is %d bytes, more than the %d a secret may hold", req.Items[i].Name, len(values[i]), MaxSecret)
		}
	}
	st, err := c.sess.OpenStream()
	if err != nil {
		return fmt.Errorf("channel: open stream: %w", err)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	if err := WriteJSON(st, FrameHeader, Header{Op: OpSecrets, Secrets: &req}); err != nil {
		return c.streamErr(ctx, OpSecrets, err)
	}
	if err := sealValues(st, req.Items, values); err != nil {
		if ge, ok := err.(*guestError); ok {
			return fmt.Errorf("guest: secrets: %s", ge.msg)
		}
		return c.streamErr(ctx, OpSecrets, err)
	}
	var r Reply
	if err := ReadJSON(st, FrameReply, &r); err != nil {
		return c.streamErr(ctx, OpSecrets, err)
	}
	if r.Error != "" {
		return fmt.Errorf("guest: secrets: %s", r.Error)
	}
	return nil
}

// Purge asks the guest to scrub /run/secrets and returns the names it
// confirmed. An error means the guest could not confirm: treat the secrets
// as still present.
func (c *Client) Purge(ctx context.Context) ([]string, error) {
	r, err := c.call(ctx, Header{Op: OpPurge})
	if err != nil {
		return nil, err
	}
	var pr PurgeReply
	if len(r.Data) > 0 {
		if err := jsonUnmarshal(r.Data, &pr); err != nil {
			return nil, err
		}
	}
	return pr.Purged, nil
}

// FetchFunc answers an on-demand fetch from the guest. It returns the value
// and a release function that zeroes it once sent; or an error whose text
// goes to the workload, so it must never contain a value, nor host detail
// (paths, a helper's stderr: see conduit.FetchError).
type FetchFunc func(ctx context.Context, name string) (value []byte, release func(), err error)

// fetchHandler is the Client's current FetchFunc.
type fetchHandler struct{ f atomic.Pointer[FetchFunc] }

// SetFetchHandler installs the function that answers the guest's on-demand
// fetches; nil refuses them.
func (c *Client) SetFetchHandler(f FetchFunc) {
	if f == nil {
		c.fetch.f.Store(nil)
		return
	}
	c.fetch.f.Store(&f)
}

// Bounds on what the guest can make the host hold through streams it opens.
// The guest is untrusted (its root can write raw yamux frames to the port),
// so each is a ceiling, not an estimate. A stream the guest opens can buffer
// at most one yamux window (256 KiB) on the host whether or not anyone
// reads it; these bound how many such streams exist at once:
// guestBacklog waiting to be served (yamux resets any beyond it) plus
// MaxGuestStreams being served or closing, about 12 MiB in all.
const (
	// MaxGuestStreams is how many guest-opened streams the host serves at
	// once; further streams wait in the backlog.
	MaxGuestStreams = 16
	// guestBacklog is the host's yamux AcceptBacklog.
	guestBacklog = 32
	// maxGuestHeader bounds a guest stream's first frame, its Header (a
	// fetch's is a name and a 32-byte key, well under a kilobyte).
	maxGuestHeader = 4 << 10
	// guestReplyTimeout bounds writing the answer: a sealed value is larger
	// than the stream's window, and a guest that never reads it must not
	// hold the value (and a slot) forever.
	guestReplyTimeout = time.Minute
)

// Variables (atomic, as sessions read them) so that tests need not wait
// for them.
var (
	// guestFirstFrame bounds the wait for a guest stream's header: the
	// agent sends it right after opening the stream.
	guestFirstFrame = durationVar(10 * time.Second)
	// guestCloseWait is how long a served stream keeps its slot waiting
	// for the guest's close: yamux's own close timeout, after which it
	// drops the stream itself.
	guestCloseWait = durationVar(streamCloseTimeout + time.Second)
)

func durationVar(d time.Duration) *atomic.Int64 {
	var v atomic.Int64
	v.Store(int64(d))
	return &v
}

func after(v *atomic.Int64) time.Time { return time.Now().Add(time.Duration(v.Load())) }

// serveGuest answers streams the guest opens (on-demand fetches) until the
// session ends, MaxGuestStreams at a time.
func (c *Client) serveGuest(ctx context.Context) {
	slots := make(chan struct{}, MaxGuestStreams)
	for {
		select {
		case slots <- struct{}{}:
		case <-c.sess.CloseChan():
			return
		}
		st, err := c.sess.AcceptStream()
		if err != nil {
			return
		}
		go func() {
			defer func() { <-slots }()
			c.answerFetch(ctx, st)
			finish(st)
		}()
	}
}

// finish closes st and waits for the guest to close its end, so a slot is
// free only once the stream (and whatever it buffered) is gone from the
// session: a guest that never closes its ends cannot pile up half-closed
// streams.
func finish(st *yamux.Stream) {
	st.Close()
	st.SetReadDeadline(after(guestCloseWait))
	io.Copy(io.Discard, st)
}

func (c *Client) answerFetch(ctx context.Context, st *yamux.Stream) {
	st.SetReadDeadline(after(guestFirstFrame))
	st.SetWriteDeadline(time.Now().Add(guestReplyTimeout))
	t, b, err := ReadFrameLimit(st, nil, maxGuestHeader)
	if err != nil || t != FrameHeader {
		return
	}
	var h Header
	if jsonUnmarshal(b, &h) != nil {
		return
	}
	if h.Op != OpFetch || h.Fetch == nil {
		WriteJSON(st, FrameReply, Reply{Error: fmt.Sprintf("unknown operation %q", h.Op)})
		return
	}
	fp := c.fetch.f.Load()
	if fp == nil {
		WriteJSON(st, FrameReply, Reply{Error: "no on-demand secrets are declared"})
		return
	}
	if _, err := sealKEM.NewPublicKey(h.Fetch.PublicKey); err != nil {
		// Checked before resolving, so a bad request costs no access.
		WriteJSON(st, FrameReply, Reply{Error: "the fetch carried no valid public key"})
		return
	}
	value, release, err := (*fp)(ctx, h.Fetch.Name)
	if err != nil {
		WriteJSON(st, FrameReply, Reply{Error: err.Error()})
		return
	}
	defer release()
	if WriteJSON(st, FrameReply, Reply{}) == nil {
		sealFetch(st, h.Fetch.PublicKey, h.Fetch.Name, value)
	}
}

// Fetch (guest side) asks the host for an on-demand secret over sess. The
// value comes back sealed to a key made for this fetch alone. The caller
// zeroes the returned value.
func Fetch(sess *yamux.Session, name string) ([]byte, error) {
	var v []byte
	var err error
	secretDo(func() { v, err = fetch(sess, name) })
	return v, err
}

func fetch(sess *yamux.Session, name string) ([]byte, error) {
	key, pub, err := newGuestKey()
	if err != nil {
		return nil, err
	}
	st, err := sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("the host is not connected: %w", err)
	}
	defer st.Close()
	if err := WriteJSON(st, FrameHeader, Header{Op: OpFetch, Fetch: &FetchRequest{Name: name, PublicKey: pub}}); err != nil {
		return nil, fmt.Errorf("ask the host: %w", err)
	}
	var r Reply
	if err := ReadJSON(st, FrameReply, &r); err != nil {
		return nil, fmt.Errorf("the host did not answer: %w", err)
	}
	if r.Error != "" {
		return nil, errors.New(r.Error)
	}
	v, err := openFetch(st, key, name)
	if err != nil {
		return nil, fmt.Errorf("the host's answer was cut short or could not be opened: %w", err)
	}
	return v, nil
}
