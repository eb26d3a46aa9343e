package intercept

import (
	"bytes"
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/credswap"
)

func TestNewRules(t *testing.T) {
	boot := make([]byte, 16)
	a, b := credswap.Placeholder("A", boot), credswap.Placeholder("B", boot)
	rs, err := NewRules([]Rule{{Name: "A", Placeholder: a, Hosts: []string{"API.example.com.", ".Example.org"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rs.list[0].Hosts, []string{"api.example.com", ".example.org"}) {
		t.Errorf("hosts kept as %v", rs.list[0].Hosts)
	}
	for _, host := range []string{"api.example.com", "example.org", "x.y.example.org"} {
		if !rs.Covers(host) {
			t.Errorf("%s not covered", host)
		}
	}
	for _, host := range []string{"example.com", "evilexample.org", "api.example.com.evil"} {
		if rs.Covers(host) {
			t.Errorf("%s covered", host)
		}
	}
	for name, rules := range map[string][]Rule{
		"no host":           {{Name: "A", Placeholder: a}},
		"bad host":          {{Name: "A", Placeholder: a, Hosts: []string{"*.example.com"}}},
		"address host":      {{Name: "A", Placeholder: a, Hosts: []string{"10.0.0.1"}}},
		"duplicate name":    {{Name: "A", Placeholder: a, Hosts: []string{"x.test"}}, {Name: "A", Placeholder: b, Hosts: []string{"y.test"}}},
		"same placeholder":  {{Name: "A", Placeholder: a, Hosts: []string{"x.test"}}, {Name: "B", Placeholder: a, Hosts: []string{"y.test"}}},
		"not a placeholder": {{Name: "A", Placeholder: "sk-123", Hosts: []string{"x.test"}}},
		"empty name":        {{Name: "", Placeholder: a, Hosts: []string{"x.test"}}},
		"name with space":   {{Name: "A B", Placeholder: a, Hosts: []string{"x.test"}}},
	} {
		if _, err := NewRules(rules); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFind(t *testing.T) {
	boot := make([]byte, 16)
	a, b := credswap.Placeholder("A", boot), credswap.Placeholder("B", boot)
	rs, _ := NewRules([]Rule{{Name: "A", Placeholder: a, Hosts: []string{"a.test"}}, {Name: "B", Placeholder: b, Hosts: []string{"b.test"}}})
	basic := base64.StdEncoding.EncodeToString([]byte("user:" + b))
	for in, want := range map[string][]string{
		"GET / HTTP/1.1\r\nAuthorization: Bearer " + a + "\r\n\r\n": {"A"},
		"Authorization: basic " + basic + "\r\nX: " + a:             {"A", "B"},
		"X: " + a + a: {"A"},
		"X: " + credswap.PlaceholderPrefix + "0000": nil,
		"Authorization: Basic !!notb64":             nil,
		"":                                          nil,
	} {
		if got := rs.Find([]byte(in)); !slices.Equal(got, want) {
			t.Errorf("Find(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestSwapIn(t *testing.T) {
	boot := make([]byte, 16)
	a, b := credswap.Placeholder("A", boot), credswap.Placeholder("B", boot)
	rules := []Rule{{Name: "A", Placeholder: a}, {Name: "B", Placeholder: b}}
	values := map[string][]byte{"A": []byte("alpha"), "B": []byte("a-much-longer-value-for-b")}
	basic := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	for in, want := range map[string]string{
		"Bearer " + a:         "Bearer alpha",
		a + "," + b + "," + a: "alpha,a-much-longer-value-for-b,alpha",
		credswap.PlaceholderPrefix + a + credswap.PlaceholderPrefix: credswap.PlaceholderPrefix + "alpha" + credswap.PlaceholderPrefix,
		"nothing":          "nothing",
		basic(a + ":" + b): basic("alpha:a-much-longer-value-for-b"),
		"basic   " + base64.StdEncoding.EncodeToString([]byte("u:"+a)): "basic " + base64.StdEncoding.EncodeToString([]byte("u:alpha")),
		basic("plain:pass"): basic("plain:pass"),
	} {
		if got := swapIn(in, rules, values); got != want {
			t.Errorf("swapIn(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestKindOf(t *testing.T) {
	for err, want := range map[error]string{
		&SourceError{Kind: "denied"}:                 "denied",
		&SourceError{Kind: "bad\r\nX: y"}:            "badX: y",
		&SourceError{Kind: strings.Repeat("k", 200)}: strings.Repeat("k", maxKind),
		&SourceError{}:                               "failed",
		errStr("secret/data/path: 403"):              "failed",
	} {
		if got := kindOf(err); got != want {
			t.Errorf("kindOf(%v) = %q, want %q", err, got, want)
		}
	}
}

type errStr string

func (e errStr) Error() string { return string(e) }

// FuzzFind: whatever bytes a guest sends (Find reads a plain http flow's
// first head), Find neither panics nor names a rule whose placeholder is
// absent from them and from their Basic credentials.
func FuzzFind(f *testing.F) {
	boot := make([]byte, 16)
	a := credswap.Placeholder("A", boot)
	rs, err := NewRules([]Rule{{Name: "A", Placeholder: a, Hosts: []string{"a.test"}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("X: \xff\xffbasic \r\n")) // bytes.ToLower grows each \xff: it once panicked
	f.Add([]byte("Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+a)) + "\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nX-Key: " + a + "\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		names := rs.Find(b)
		if len(names) > 0 && !bytes.Contains(b, []byte(a)) && !bytes.Contains(bytes.ToLower(b), []byte("basic")) {
			t.Fatalf("named %v in %q", names, b)
		}
	})
}
