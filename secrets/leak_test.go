package secrets

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// assertNoLeak fails when any rendering of any item (its error text, every
// fmt verb, JSON, slog) contains secret, its hex or its base64 form. The
// failure message never shows the secret.
func assertNoLeak(t testing.TB, secret []byte, items ...any) {
	t.Helper()
	if len(secret) < 6 {
		t.Fatalf("assertNoLeak: use a secret of at least 6 bytes (got %d) so matches are meaningful", len(secret))
	}
	needles := [][]byte{secret, []byte(hex.EncodeToString(secret)), []byte(base64.StdEncoding.EncodeToString(secret))}
	check := func(i int, item any, how string, text []byte) {
		t.Helper()
		for _, n := range needles {
			if bytes.Contains(text, n) {
				t.Errorf("item %d (%T) leaks the secret value through %s", i, item, how)
				return
			}
		}
	}
	for i, item := range items {
		if item == nil {
			continue
		}
		if err, ok := item.(error); ok {
			check(i, item, "Error()", []byte(err.Error()))
		}
		if s, ok := item.(string); ok {
			check(i, item, "the string itself", []byte(s))
		}
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			check(i, item, verb, []byte(fmt.Sprintf(verb, item)))
		}
		if b, err := json.Marshal(item); err == nil {
			check(i, item, "json.Marshal", b)
		}
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "item", item)
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "item", item)
		check(i, item, "slog", buf.Bytes())
	}
}

// mustEqualValue compares v with want without ever printing either.
func mustEqualValue(t testing.TB, v *Value, want []byte) {
	t.Helper()
	if !bytes.Equal(v.Bytes(), want) {
		t.Fatalf("resolved value differs from the expected one (got %d bytes, want %d)", v.Len(), len(want))
	}
}

func TestAssertNoLeakCatchesLeaks(t *testing.T) {
	secret := []byte("correct-horse-battery")
	ft := &fakeTB{TB: t}
	assertNoLeak(ft, secret, fmt.Errorf("oops %s", strings.ToUpper("x")+string(secret)))
	if !ft.failed {
		t.Fatal("a leaking error was not caught")
	}
	ft = &fakeTB{TB: t}
	assertNoLeak(ft, secret, struct{ B []byte }{secret})
	if !ft.failed {
		t.Fatal("a leaking struct was not caught")
	}
}

type fakeTB struct {
	testing.TB
	failed bool
}

func (f *fakeTB) Helper()                   {}
func (f *fakeTB) Errorf(string, ...any)     { f.failed = true }
func (f *fakeTB) Fatalf(s string, a ...any) { f.failed = true }
