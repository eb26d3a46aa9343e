package secrets

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// MaxValueSize bounds one secret value: secrets are credentials, not data,
// and every byte is held in memory and copied into the guest. It is the one
// limit of the whole path, enforced at resolution (before any VM boots): a
// value travels sealed in one channel frame of at most 1 MiB, less the
// seal's 16-byte tag, so 1,048,560 bytes. Package conduit, which joins both,
// fails to compile if channel.MaxSecret ever disagrees.
const MaxValueSize = 1<<20 - 16

// Value is a secret value held in process memory as bytes. It never reveals
// itself when printed or encoded: fmt (every verb, including %v, %+v, %#v,
// %s, %q, %x), encoding/json, encoding.TextMarshaler and log/slog all render
// "[redacted N bytes]". Only Bytes gives access to the content.
//
// The bytes live behind a pointer so that a Value copied into a struct and
// printed through an unexported field shows an address, never the content.
// Copies of a Value share the bytes; Zero on any copy zeroes them all.
type Value struct {
	p *buffer
}

type buffer struct {
	b []byte
}

// Format keeps a *buffer reached some other way from printing its bytes.
func (b *buffer) Format(f fmt.State, _ rune) { io.WriteString(f, "[redacted]") }

// NewValue returns a Value that takes ownership of b: the caller must not
// keep or modify b, and Zero will overwrite it.
func NewValue(b []byte) *Value {
	return &Value{p: &buffer{b: b}}
}

// Bytes returns the value's bytes, not a copy: do not retain the slice past
// Zero, and do not convert it to a string (strings cannot be zeroed).
func (v *Value) Bytes() []byte {
	if v == nil || v.p == nil {
		return nil
	}
	return v.p.b
}

// Len returns the value's length in bytes.
func (v *Value) Len() int { return len(v.Bytes()) }

// Zero overwrites the bytes with zeros and empties the value. It is safe to
// call more than once and on a nil Value.
func (v *Value) Zero() {
	if v == nil || v.p == nil {
		return
	}
	clear(v.p.b[:cap(v.p.b)])
	v.p.b = nil
}

func (v Value) redacted() string {
	return "[redacted " + strconv.Itoa(v.Len()) + " bytes]"
}

// String returns "[redacted N bytes]", never the value.
func (v Value) String() string { return v.redacted() }

// GoString returns "[redacted N bytes]", never the value.
func (v Value) GoString() string { return v.redacted() }

// Format prints "[redacted N bytes]" for every verb and flag.
func (v Value) Format(f fmt.State, _ rune) { io.WriteString(f, v.redacted()) }

// MarshalJSON encodes the value as the string "[redacted N bytes]".
func (v Value) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(v.redacted())), nil }

// MarshalText encodes the value as "[redacted N bytes]".
func (v Value) MarshalText() ([]byte, error) { return []byte(v.redacted()), nil }

// LogValue makes log/slog print "[redacted N bytes]".
func (v Value) LogValue() slog.Value { return slog.StringValue(v.redacted()) }
