package intercept

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/microagent-dev/microagent/credswap"
	"github.com/microagent-dev/microagent/vmm"
)

const (
	// maxNameLen bounds a rule's name (it is echoed in events and in the
	// guest's 502 answers).
	maxNameLen = 128
)

// Rule says which hosts a secret's value may be sent to in place of its
// placeholder.
type Rule struct {
	// Name is the secret's name (as the Source knows it).
	Name string `json:"name"`
	// Placeholder is what the guest holds (Placeholder).
	Placeholder string `json:"placeholder"`
	// Hosts are where the value goes, in --egress-allow syntax
	// (vmm.ParseAllowName): api.example.com, or .example.com for the
	// domain and every name in it.
	Hosts []string `json:"hosts"`
}

// Rules is a validated set of rules (NewRules).
type Rules struct {
	list []Rule
}

// NewRules validates rules: every name printable and unique, every
// placeholder of Placeholder's shape and unique, at least one valid host
// each. The hosts are kept as ParseAllowName returns them.
func NewRules(rules []Rule) (Rules, error) {
	names := map[string]bool{}
	phs := map[string]bool{}
	out := make([]Rule, 0, len(rules))
	for _, r := range rules {
		if r.Name == "" || len(r.Name) > maxNameLen || strings.ContainsFunc(r.Name, func(c rune) bool { return c <= ' ' || c >= 0x7f }) {
			return Rules{}, fmt.Errorf("secret swap rule: the name must be 1-%d printable ASCII characters without spaces", maxNameLen)
		}
		if names[r.Name] {
			return Rules{}, fmt.Errorf("secret swap rule %s: declared twice: give each name once", r.Name)
		}
		if !credswap.ValidPlaceholder(r.Placeholder) {
			return Rules{}, fmt.Errorf("secret swap rule %s: the placeholder is not one intercept.Placeholder makes", r.Name)
		}
		if phs[r.Placeholder] {
			return Rules{}, fmt.Errorf("secret swap rule %s: its placeholder is another rule's", r.Name)
		}
		if len(r.Hosts) == 0 {
			return Rules{}, fmt.Errorf("secret swap rule %s: no host: name the hosts its value goes to (api.example.com or .example.com)", r.Name)
		}
		hosts := make([]string, 0, len(r.Hosts))
		for _, h := range r.Hosts {
			p, err := vmm.ParseAllowName(h)
			if err != nil {
				return Rules{}, fmt.Errorf("secret swap rule %s: %w", r.Name, err)
			}
			hosts = append(hosts, p)
		}
		names[r.Name], phs[r.Placeholder] = true, true
		out = append(out, Rule{Name: r.Name, Placeholder: r.Placeholder, Hosts: hosts})
	}
	return Rules{list: out}, nil
}

// Len is the number of rules.
func (rs Rules) Len() int { return len(rs.list) }

// Covers reports whether some rule's hosts cover host: a TLS flow to it is
// intercepted.
func (rs Rules) Covers(host string) bool {
	for _, r := range rs.list {
		if vmm.MatchName(r.Hosts, host) {
			return true
		}
	}
	return false
}

// Find returns the names of the rules whose placeholder occurs in b,
// literally or inside a Basic credential (base64 of user:password), in
// rule order. It is how a placeholder on its way to a host that must not
// get the value is noticed (plain http, another rule's host).
func (rs Rules) Find(b []byte) []string {
	if len(rs.list) == 0 {
		return nil
	}
	var names []string
	scan := func(b []byte) {
		if !bytes.Contains(b, []byte(credswap.PlaceholderPrefix)) {
			return
		}
		for _, r := range rs.list {
			if bytes.Contains(b, []byte(r.Placeholder)) && !slices.Contains(names, r.Name) {
				names = append(names, r.Name)
			}
		}
	}
	scan(b)
	for _, cred := range basicCredentials(b) {
		scan(cred)
	}
	return names
}

// basicCredentials decodes every "Basic <base64>" token in b (any case).
func basicCredentials(b []byte) [][]byte {
	var out [][]byte
	// ASCII-only folding keeps every index of lower an index of b
	// (bytes.ToLower turns an invalid byte into three).
	lower := make([]byte, len(b))
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	for off := 0; ; {
		i := bytes.Index(lower[off:], []byte("basic "))
		if i < 0 {
			return out
		}
		start := off + i + len("basic ")
		for start < len(b) && b[start] == ' ' {
			start++
		}
		end := start
		for end < len(b) && isBase64(b[end]) {
			end++
		}
		if dec, err := base64.StdEncoding.DecodeString(string(b[start:end])); err == nil && len(dec) > 0 {
			out = append(out, dec)
		}
		off = end
	}
}

func isBase64(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '='
}

// forHost splits the rules whose placeholders occur in a header value into
// those whose hosts cover host (the value may be swapped in) and the
// others (the placeholder goes out as is, and is flagged).
func (rs Rules) forHost(host string, names []string) (swap, flag []Rule) {
	for _, r := range rs.list {
		if !slices.Contains(names, r.Name) {
			continue
		}
		if vmm.MatchName(r.Hosts, host) {
			swap = append(swap, r)
		} else {
			flag = append(flag, r)
		}
	}
	return swap, flag
}

// swapIn returns the header value v with every placeholder of rules
// replaced by its value (values by rule name), inside a Basic credential
// too (decoded, replaced, encoded again).
//
// Go cannot zero a string: net/http takes header values as strings, so
// the one string returned here holds the value until it is collected (it
// is written to the upstream connection, then dropped with the request).
// Every byte slice that held the value on the way (the decoded and the
// encoded credential, the buffer the string was copied from) is zeroed
// before swapIn returns, and no other copy is made.
func swapIn(v string, rules []Rule, values map[string][]byte) string {
	if scheme, cred, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "basic") {
		cred = strings.TrimLeft(cred, " ")
		if dec, err := base64.StdEncoding.DecodeString(cred); err == nil {
			out, changed := replaceAll(dec, rules, values)
			clear(dec)
			if changed {
				buf := make([]byte, len(scheme)+1+base64.StdEncoding.EncodedLen(len(out)))
				n := copy(buf, scheme+" ")
				base64.StdEncoding.Encode(buf[n:], out)
				clear(out)
				s := string(buf)
				clear(buf)
				return s
			}
		}
	}
	out, changed := replaceAll([]byte(v), rules, values)
	if !changed {
		return v
	}
	s := string(out)
	clear(out)
	return s
}

// replaceAll replaces every placeholder of rules in b by its value into
// one buffer sized up front (growing it would leave copies of the value
// behind), and reports whether anything was replaced.
func replaceAll(b []byte, rules []Rule, values map[string][]byte) ([]byte, bool) {
	size, hits := len(b), 0
	for _, r := range rules {
		if k := bytes.Count(b, []byte(r.Placeholder)); k > 0 {
			size += k * (len(values[r.Name]) - len(r.Placeholder))
			hits += k
		}
	}
	if hits == 0 {
		return b, false
	}
	out := make([]byte, 0, size)
	for i := 0; i < len(b); {
		j := bytes.Index(b[i:], []byte(credswap.PlaceholderPrefix))
		if j < 0 {
			out = append(out, b[i:]...)
			break
		}
		out = append(out, b[i:i+j]...)
		i += j
		matched := false
		for _, r := range rules {
			if bytes.HasPrefix(b[i:], []byte(r.Placeholder)) {
				out = append(out, values[r.Name]...)
				i += len(r.Placeholder)
				matched = true
				break
			}
		}
		if !matched {
			out = append(out, credswap.PlaceholderPrefix...)
			i += len(credswap.PlaceholderPrefix)
		}
	}
	return out, true
}

// unswap puts each rule's placeholder back wherever its value appears in
// the response headers h, as it is or inside base64 (a Basic credential):
// what a host echoes of the request goes back to the guest as the guest
// sent it.
func unswap(h http.Header, rules []Rule, values map[string][]byte) {
	back := func(b []byte) ([]byte, bool) {
		changed := false
		for _, r := range rules {
			if val := values[r.Name]; len(val) > 0 && bytes.Contains(b, val) {
				b, changed = bytes.ReplaceAll(b, val, []byte(r.Placeholder)), true
			}
		}
		return b, changed
	}
	for name, vs := range h {
		for i, v := range vs {
			b, _ := back([]byte(v))
			// Base64 runs that decode to something holding a value.
			var out []byte
			for j := 0; j < len(b); {
				k := j
				for k < len(b) && isBase64(b[k]) {
					k++
				}
				if k == j {
					out = append(out, b[j])
					j++
					continue
				}
				run := b[j:k]
				if dec, err := base64.StdEncoding.DecodeString(string(run)); err == nil {
					if dec2, changed := back(dec); changed {
						run = []byte(base64.StdEncoding.EncodeToString(dec2))
					}
					clear(dec)
				}
				out = append(out, run...)
				j = k
			}
			h[name][i] = string(out)
			clear(b)
		}
	}
}
