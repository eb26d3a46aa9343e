package secrets

import (
	"bytes"
	"strings"
	"testing"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/. Run a fuzzer with e.g.
// go test ./secrets -run '^$' -fuzz '^FuzzParseDotenv$' -fuzztime 60s

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"env:API_TOKEN", "file:/etc/x", "dotenv:/a.env#K", "vault:secret/data/app#f", "helper:x y", "", ":", "a:", "A:b", "x:\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			if Kind(err) != ErrBadRef {
				t.Fatalf("error of kind %v: %v", Kind(err), err)
			}
			// Never echo what follows the scheme: it may be a value.
			if _, after, ok := strings.Cut(s, ":"); ok && len(after) >= 8 && strings.Contains(err.Error(), after) {
				t.Fatalf("error echoes the reference: %v", err)
			}
			if len(s) >= 16 && strings.Contains(err.Error(), s) {
				t.Fatalf("error echoes the input: %v", err)
			}
			return
		}
		if r.String() != s {
			t.Fatalf("round trip: %q -> %q", s, r.String())
		}
		text, _ := r.MarshalText()
		var back Ref
		if err := back.UnmarshalText(text); err != nil || back != r {
			t.Fatalf("text round trip: %v", err)
		}
		if !validScheme(r.Scheme) || r.Ref == "" || hasControl(r.Ref) {
			t.Fatalf("accepted %+v", r)
		}
		// Checking against the registry must not panic either.
		if c, err := Check(r); err == nil {
			if _, err := Check(c); err != nil {
				t.Fatalf("canonical form %v rejected: %v", c, err)
			}
		}
	})
}

func FuzzParseDecl(f *testing.F) {
	for _, s := range []string{"API_KEY=env:API_TOKEN", "A=file:/x", "A=dotenv:/a.env#B", "=env:X", "A=", "A", "A=b=c:d", "1=env:X", "_=x:y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDecl(s)
		if err != nil {
			if k := Kind(err); k != ErrBadRef && k != ErrBadName {
				t.Fatalf("error of kind %v: %v", k, err)
			}
			// The reason (the message minus "secret NAME: ") must not
			// contain the text after '='.
			if _, after, ok := strings.Cut(s, "="); ok && len(after) >= 8 && strings.Contains(Reason(err), after) {
				t.Fatalf("error echoes the text after '=': %v", err)
			}
			return
		}
		if !ValidName(d.Name) || d.Name+"="+d.Ref.String() != s || d.OnDemand {
			t.Fatalf("accepted %q as %+v", s, d)
		}
	})
}

func FuzzParseDotenv(f *testing.F) {
	for _, s := range []string{
		"A=1\n", "export A='x'\n", "A=\"a\\nb\"\n", "# c\n\nA = b # c\n", "A='multi\nline'\n", "A=\"unterminated",
		"A=1\r\nB=2\r\n", "\xef\xbb\xbfA=1", "A=\"x\" # c\n", "A=\"\\\\\\\"\"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseDotenv(data)
		if err != nil {
			// Messages carry a line number and at most a key: printable ASCII.
			msg := err.Error()
			if len(msg) > 400 {
				t.Fatalf("error too long (%d bytes)", len(msg))
			}
			for i := 0; i < len(msg); i++ {
				if msg[i] < 0x20 || msg[i] > 0x7e {
					t.Fatalf("error has a non-printable byte at %d", i)
				}
			}
			return
		}
		seen := map[string]bool{}
		for _, e := range entries {
			if !ValidName(e.Key) || seen[e.Key] || e.Line < 1 {
				t.Fatalf("bad entry %q line %d", e.Key, e.Line)
			}
			seen[e.Key] = true
		}
		// Rendering the entries quoted and parsing again gives them back.
		again, err := ParseDotenv(renderDotenv(entries))
		if err != nil {
			t.Fatalf("re-parse of rendered entries: %v", err)
		}
		if len(again) != len(entries) {
			t.Fatalf("re-parse: %d entries, want %d", len(again), len(entries))
		}
		for i := range entries {
			if again[i].Key != entries[i].Key || !bytes.Equal(again[i].Value.Bytes(), entries[i].Value.Bytes()) {
				t.Fatalf("entry %s changed in the round trip", entries[i].Key)
			}
		}
		ZeroDotenv(entries)
		for _, e := range entries {
			if e.Value.Len() != 0 {
				t.Fatal("not zeroed")
			}
		}
	})
}
