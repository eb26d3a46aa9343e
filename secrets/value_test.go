package secrets

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
)

func TestValueNeverPrints(t *testing.T) {
	secret := []byte("s3cr3t-VALUE-7f3a9c")
	v := NewValue(bytes.Clone(secret))
	type holder struct {
		Exported *Value
		hidden   *Value
		Plain    Value
		plain    Value
	}
	h := holder{Exported: v, hidden: v, Plain: *v, plain: *v}
	b := &Bundle{Secrets: []Secret{{Name: "A", Scheme: "env", Value: v}}}
	m := map[string]*Value{"A": v}
	assertNoLeak(t, secret, v, *v, h, &h, []*Value{v}, []Value{*v}, m, b, *b, b.Secrets[0],
		DotenvEntry{Key: "A", Value: v}, []DotenvEntry{{Key: "A", Value: v}})

	if got := fmt.Sprint(v); got != "[redacted 19 bytes]" {
		t.Fatalf("fmt.Sprint = %q", got)
	}
	j, _ := json.Marshal(b)
	if !bytes.Contains(j, []byte(`"value":"[redacted 19 bytes]"`)) {
		t.Fatalf("bundle JSON %s", j)
	}
	mustEqualValue(t, v, secret)
}

func TestValueZero(t *testing.T) {
	backing := []byte("zero-me-please")
	v := NewValue(backing)
	copyOf := *v // shares the bytes
	v.Zero()
	if !bytes.Equal(backing, make([]byte, len(backing))) {
		t.Fatal("Zero left bytes in the backing array")
	}
	if v.Len() != 0 || copyOf.Len() != 0 || v.Bytes() != nil {
		t.Fatal("a zeroed value still has a length")
	}
	v.Zero() // twice is fine
	var nilV *Value
	nilV.Zero()
	if nilV.Len() != 0 || nilV.Bytes() != nil {
		t.Fatal("nil Value")
	}
	if s := fmt.Sprint(nilV); s != "<nil>" {
		t.Fatalf("nil value prints %q", s)
	}
}

func TestBundleZero(t *testing.T) {
	a, b := []byte("first-value"), []byte("second-value")
	bundle := &Bundle{Secrets: []Secret{{Name: "A", Value: NewValue(a)}, {Name: "B", Value: NewValue(b)}}}
	if v, ok := bundle.Get("B"); !ok || v.Len() != len(b) {
		t.Fatal("Get B")
	}
	if _, ok := bundle.Get("C"); ok {
		t.Fatal("Get C")
	}
	bundle.Zero()
	if !bytes.Equal(a, make([]byte, len(a))) || !bytes.Equal(b, make([]byte, len(b))) {
		t.Fatal("Bundle.Zero left bytes")
	}
}

func TestReadBoundedZeroesWhatItOutgrows(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 5000)
	got, err := readBounded(bytes.NewReader(data), 0, 10000)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("readBounded: %v, %d bytes", err, len(got))
	}
	if _, err := readBounded(bytes.NewReader(data), 0, 4999); err != errTooBig {
		t.Fatalf("over the limit: %v", err)
	}
	if got, err := readBounded(bytes.NewReader(data), 5000, 5000); err != nil || len(got) != 5000 {
		t.Fatalf("exact limit: %v %d", err, len(got))
	}
}
