package channel

import (
	"crypto/ecdh"
	"crypto/hpke"
	"fmt"
	"io"
)

// Values cross the channel sealed (HPKE, RFC 9180) to a key pair the guest
// makes for that one delivery or fetch. The channel's buffers on both sides
// (yamux's receive buffers, bufio, the kernel's virtio-serial pages) are
// out of the agent's reach and are never zeroed, so they must only ever
// hold ciphertext: once the guest drops its private key, nothing in its
// memory opens them, and a memory image holds no copy of a value.
//
// One key pair per operation rather than per session: a session's key
// would live in the agent's memory as long as the session, and a snapshot
// taken meanwhile would hold both it and the ciphertext still sitting in
// those buffers.

// Frame types of sealed values.
const (
	// FrameSealKey (guest to host) carries the guest's fresh public key.
	FrameSealKey FrameType = 21
	// FrameSealed (host to guest) carries first the HPKE encapsulated key,
	// then one sealed value per frame.
	FrameSealed FrameType = 22
)

// SealOverhead is what sealing adds to a value (the AEAD tag).
const SealOverhead = 16

// The HPKE suite. ChaCha20-Poly1305 rather than AES-GCM: emulated (TCG)
// guests have no AES instructions, and it is constant time in software.
var (
	sealKEM  = hpke.DHKEM(ecdh.X25519())
	sealKDF  = hpke.HKDFSHA256()
	sealAEAD = hpke.ChaCha20Poly1305()
)

// Info strings bind a sealed value to its use.
var (
	infoDeliver = []byte("microagent/v2 secrets deliver")
	infoFetch   = []byte("microagent/v2 secrets fetch")
)

// guestKey is a guest's key pair for one operation.
type guestKey struct{ priv hpke.PrivateKey }

func newGuestKey() (*guestKey, []byte, error) {
	priv, err := sealKEM.GenerateKey()
	if err != nil {
		return nil, nil, fmt.Errorf("make a key pair: %w", err)
	}
	return &guestKey{priv: priv}, priv.PublicKey().Bytes(), nil
}

// recipient opens the values sealed to this key under enc. The private key
// is dropped at once: only the recipient's AEAD key remains.
func (k *guestKey) recipient(enc, info []byte) (*hpke.Recipient, error) {
	r, err := hpke.NewRecipient(enc, k.priv, sealKDF, sealAEAD, info)
	k.priv = nil
	if err != nil {
		return nil, fmt.Errorf("open the sealed values: %w", err)
	}
	return r, nil
}

// sender seals values to a guest's public key.
func sender(pub, info []byte) ([]byte, *hpke.Sender, error) {
	pk, err := sealKEM.NewPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("the guest's public key: %w", err)
	}
	enc, s, err := hpke.NewSender(pk, sealKDF, sealAEAD, info)
	if err != nil {
		return nil, nil, fmt.Errorf("seal to the guest: %w", err)
	}
	return enc, s, nil
}

// readSealed reads one FrameSealed frame into a fresh buffer.
func readSealed(r io.Reader, what string) ([]byte, error) {
	t, b, err := ReadFrame(r, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if t != FrameSealed {
		return nil, fmt.Errorf("%s: got frame type %d, want a sealed frame", what, t)
	}
	return b, nil
}

// OpenSecrets is the guest's side of an OpSecrets delivery after the
// header: it sends a fresh public key, then reads and opens one sealed
// value per item. The caller zeroes the returned values. The private key
// and the AEAD key are dropped before it returns; the memory they used is
// not zeroed (crypto/hpke keeps them in unexported fields), see secretDo.
func OpenSecrets(rw io.ReadWriter, items []SecretItem) ([][]byte, error) {
	var values [][]byte
	var err error
	secretDo(func() { values, err = openSecrets(rw, items) })
	return values, err
}

func openSecrets(rw io.ReadWriter, items []SecretItem) ([][]byte, error) {
	key, pub, err := newGuestKey()
	if err != nil {
		return nil, err
	}
	if err := WriteFrame(rw, FrameSealKey, pub); err != nil {
		return nil, fmt.Errorf("send the public key: %w", err)
	}
	enc, err := readSealed(rw, "encapsulated key")
	if err != nil {
		return nil, err
	}
	r, err := key.recipient(enc, infoDeliver)
	if err != nil {
		return nil, err
	}
	values := make([][]byte, 0, len(items))
	for i, it := range items {
		ct, err := readSealed(rw, "secret "+it.Name)
		if err == nil && len(ct) != it.Size+SealOverhead {
			err = fmt.Errorf("secret %s: sealed value of %d bytes, want %d", it.Name, len(ct), it.Size+SealOverhead)
		}
		var v []byte
		if err == nil {
			v, err = r.Open(sealAAD(i, it.Name), ct)
		}
		if err != nil {
			for _, v := range values {
				clear(v)
			}
			return nil, fmt.Errorf("secret %s: %w", it.Name, err)
		}
		values = append(values, v)
	}
	return values, nil
}

// sealAAD binds a value to its place and name, so sealed values cannot be
// swapped between names.
func sealAAD(i int, name string) []byte { return fmt.Appendf(nil, "%d:%s", i, name) }

// sealValues is the host's side: it reads the guest's key (or its refusal)
// and sends the encapsulated key and the sealed values.
func sealValues(rw io.ReadWriter, items []SecretItem, values [][]byte) error {
	t, pub, err := ReadFrame(rw, nil)
	if err != nil {
		return err
	}
	if t == FrameReply {
		var r Reply
		if err := jsonUnmarshal(pub, &r); err != nil {
			return err
		}
		return &guestError{msg: r.Error}
	}
	if t != FrameSealKey {
		return fmt.Errorf("got frame type %d, want the guest's public key", t)
	}
	enc, s, err := sender(pub, infoDeliver)
	if err != nil {
		return err
	}
	if err := WriteFrame(rw, FrameSealed, enc); err != nil {
		return err
	}
	for i, v := range values {
		ct, err := s.Seal(sealAAD(i, items[i].Name), v)
		if err != nil {
			return fmt.Errorf("seal secret %s: %w", items[i].Name, err)
		}
		if err := WriteFrame(rw, FrameSealed, ct); err != nil {
			return err
		}
	}
	return nil
}

// guestError is a refusal the guest sent instead of its key.
type guestError struct{ msg string }

func (e *guestError) Error() string { return e.msg }

// sealFetch seals one fetched value to the guest's key from the request.
func sealFetch(w io.Writer, pub []byte, name string, value []byte) error {
	enc, s, err := sender(pub, infoFetch)
	if err != nil {
		return err
	}
	ct, err := s.Seal([]byte(name), value)
	if err != nil {
		return err
	}
	if err := WriteFrame(w, FrameSealed, enc); err != nil {
		return err
	}
	return WriteFrame(w, FrameSealed, ct)
}

// openFetch opens a fetched value sealed to key.
func openFetch(r io.Reader, key *guestKey, name string) ([]byte, error) {
	enc, err := readSealed(r, "encapsulated key")
	if err != nil {
		return nil, err
	}
	rc, err := key.recipient(enc, infoFetch)
	if err != nil {
		return nil, err
	}
	ct, err := readSealed(r, "sealed value")
	if err != nil {
		return nil, err
	}
	return rc.Open([]byte(name), ct)
}
