package channel

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// tap records every byte a connection carries, both ways.
type tap struct {
	net.Conn
	mu  sync.Mutex
	rec bytes.Buffer
}

func (t *tap) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	t.mu.Lock()
	t.rec.Write(p[:n])
	t.mu.Unlock()
	return n, err
}

func (t *tap) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.rec.Write(p)
	t.mu.Unlock()
	return t.Conn.Write(p)
}

func (t *tap) recorded() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.rec.Bytes())
}

// sealedPair connects a host Client to a minimal guest that opens
// deliveries with OpenSecrets and hands them to got; the guest's end is
// tapped.
func sealedPair(t *testing.T, got chan<- [][]byte) (*Client, *yamux.Session, *tap) {
	t.Helper()
	host, g := net.Pipe()
	tp := &tap{Conn: g}
	sessc := make(chan *yamux.Session, 1)
	go func() {
		if GuestHandshake(tp) != nil {
			return
		}
		sess, err := yamux.Server(tp, YamuxConfig())
		if err != nil {
			return
		}
		sessc <- sess
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				var h Header
				if ReadJSON(st, FrameHeader, &h) != nil {
					return
				}
				if h.Secrets.Items[0].Name == "REFUSE" {
					WriteJSON(st, FrameReply, Reply{Error: "refused before the key"})
					return
				}
				vs, err := OpenSecrets(st, h.Secrets.Items)
				if err != nil {
					WriteJSON(st, FrameReply, Reply{Error: err.Error()})
					return
				}
				got <- vs
				WriteJSON(st, FrameReply, Reply{})
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Connect(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, <-sessc, tp
}

// Only ciphertext crosses the channel: neither a delivered nor a fetched
// value appears in the bytes the guest's end received or sent.
func TestSealedValuesNeverCrossInPlaintext(t *testing.T) {
	got := make(chan [][]byte, 1)
	c, gsess, tp := sealedPair(t, got)
	ctx := context.Background()
	values := [][]byte{[]byte("first-secret-value-0123456789"), bytes.Repeat([]byte{0xC3}, 5000), {}}
	err := c.DeliverSecrets(ctx, SecretsRequest{Items: []SecretItem{{Name: "A"}, {Name: "B"}, {Name: "EMPTY"}}}, values)
	if err != nil {
		t.Fatal(err)
	}
	opened := <-got
	for i := range values {
		if !bytes.Equal(opened[i], values[i]) {
			t.Fatalf("value %d opened as %q", i, opened[i])
		}
	}
	fetched := []byte("fetched-on-demand-value-XYZ")
	c.SetFetchHandler(func(ctx context.Context, name string) ([]byte, func(), error) {
		if name != "DB" {
			return nil, nil, errors.New("denied")
		}
		return bytes.Clone(fetched), func() {}, nil
	})
	v, err := Fetch(gsess, "DB")
	if err != nil || !bytes.Equal(v, fetched) {
		t.Fatalf("fetch: %q %v", v, err)
	}
	if _, err := Fetch(gsess, "OTHER"); err == nil || err.Error() != "denied" {
		t.Fatalf("denied fetch: %v", err)
	}
	rec := tp.recorded()
	for _, v := range [][]byte{values[0], values[1][:64], fetched} {
		if bytes.Contains(rec, v) {
			t.Fatalf("a value crossed the channel in plaintext (%d bytes recorded)", len(rec))
		}
	}
	if !bytes.Contains(rec, []byte(`"name":"A"`)) {
		t.Fatal("the tap recorded nothing useful")
	}
}

// A guest that refuses before the key exchange is reported with its reason.
func TestSealedDeliveryRefused(t *testing.T) {
	c, _, _ := sealedPair(t, make(chan [][]byte, 1))
	err := c.DeliverSecrets(context.Background(), SecretsRequest{Items: []SecretItem{{Name: "REFUSE"}}}, [][]byte{[]byte("x")})
	if err == nil || !strings.Contains(err.Error(), "refused before the key") {
		t.Fatalf("got %v", err)
	}
}

// A sealed value cannot be moved to another name, tampered with, or opened
// with a key other than the one it was sealed to.
func TestSealedValuesAreBound(t *testing.T) {
	items := []SecretItem{{Name: "A", Size: 3}, {Name: "B", Size: 3}}
	run := func(tamper func(frames [][]byte)) error {
		host, guest := net.Pipe()
		defer host.Close()
		done := make(chan error, 1)
		go func() {
			_, err := OpenSecrets(guest, items)
			guest.Close()
			done <- err
		}()
		// The host side, with the frames intercepted.
		_, pub, err := ReadFrame(host, nil)
		if err != nil {
			return err
		}
		enc, s, err := sender(pub, infoDeliver)
		if err != nil {
			return err
		}
		frames := [][]byte{enc}
		for i, v := range [][]byte{[]byte("aaa"), []byte("bbb")} {
			ct, _ := s.Seal(sealAAD(i, items[i].Name), v)
			frames = append(frames, ct)
		}
		tamper(frames)
		for _, f := range frames {
			if WriteFrame(host, FrameSealed, f) != nil {
				break
			}
		}
		return <-done
	}
	if err := run(func([][]byte) {}); err != nil {
		t.Fatalf("untouched: %v", err)
	}
	if err := run(func(f [][]byte) { f[1], f[2] = f[2], f[1] }); err == nil {
		t.Error("swapped values were opened")
	}
	if err := run(func(f [][]byte) { f[1][0] ^= 1 }); err == nil {
		t.Error("a tampered value was opened")
	}
	if err := run(func(f [][]byte) {
		enc, _, _ := sender(mustPub(t), infoDeliver)
		f[0] = enc
	}); err == nil {
		t.Error("values sealed under another encapsulation were opened")
	}
}

func mustPub(t *testing.T) []byte {
	_, pub, err := newGuestKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
