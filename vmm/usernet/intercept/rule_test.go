package intercept

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNewCA(t *testing.T) {
	certPEM, keyPEM, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(certPEM), "PRIVATE") {
		t.Fatal("the certificate PEM carries the key")
	}
	ca, err := LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Certificate()
	if c.Subject.CommonName != CAName || !c.IsCA || !c.MaxPathLenZero || c.MaxPathLen != 0 {
		t.Errorf("CA certificate: %+v", c.Subject)
	}
	if c.KeyUsage != x509.KeyUsageCertSign {
		t.Errorf("key usage %v, want certSign only", c.KeyUsage)
	}
	if life := c.NotAfter.Sub(c.NotBefore); life > CAValidity+2*time.Hour {
		t.Errorf("the CA is valid for %v", life)
	}
	if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("key %T", c.PublicKey)
	}
	other, _, _ := NewCA()
	if string(other) == string(certPEM) {
		t.Error("two CAs are the same")
	}
}

func TestLeaf(t *testing.T) {
	certPEM, keyPEM, _ := NewCA()
	ca, err := LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	l, err := ca.Leaf("API.Example.com.")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(l.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "api.example.com", Roots: pool}); err != nil {
		t.Errorf("the leaf does not verify: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example.com", Roots: pool}); err == nil {
		t.Error("the leaf verifies for another name")
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > leafValidity+clockSkew {
		t.Errorf("a leaf is valid for %v", life)
	}
	if again, _ := ca.Leaf("api.example.com"); again != l {
		t.Error("the leaf was minted again instead of cached")
	}
	// Near its end a leaf is minted again.
	ca.now = func() time.Time { return time.Now().Add(leafValidity - leafRenew/2) }
	if again, _ := ca.Leaf("api.example.com"); again == l {
		t.Error("a leaf close to its end was kept")
	}
	for i := range 2 * maxLeaves {
		if _, err := ca.Leaf(strings.Repeat("a", i%50+1) + ".example.com" + string(rune('a'+i/50))); err != nil {
			t.Fatal(err)
		}
	}
	if len(ca.leaves) > maxLeaves || ca.lru.Len() != len(ca.leaves) {
		t.Errorf("%d leaves cached (lru %d), bound %d", len(ca.leaves), ca.lru.Len(), maxLeaves)
	}
	if _, err := ca.Leaf(""); err == nil {
		t.Error("a leaf for no name")
	}
}

func TestLoadCARefuses(t *testing.T) {
	certPEM, keyPEM, _ := NewCA()
	_, otherKey, _ := NewCA()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	for name, tc := range map[string][2][]byte{
		"another CA's key": {certPEM, otherKey},
		"a stray key":      {certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})},
		"no certificate":   {keyPEM, keyPEM},
		"no key":           {certPEM, certPEM},
		"garbage":          {[]byte("x"), []byte("y")},
		"huge":             {make([]byte, maxPEM+1), keyPEM},
	} {
		if _, err := LoadCA(tc[0], tc[1]); err == nil {
			t.Errorf("%s: loaded", name)
		} else if strings.Contains(err.Error(), string(keyPEM[30:60])) {
			t.Errorf("%s: the error shows the key", name)
		}
	}
}

func TestPlaceholder(t *testing.T) {
	boot, boot2 := make([]byte, 32), make([]byte, 32)
	rand.Read(boot)
	rand.Read(boot2)
	p := Placeholder("OPENAI_API_KEY", boot)
	if !regexp.MustCompile(`^MICROAGENT_PLACEHOLDER_[0-9a-f]{40}$`).MatchString(p) || len(p) != PlaceholderLen {
		t.Errorf("shape: %q", p)
	}
	if Placeholder("OPENAI_API_KEY", boot) != p {
		t.Error("not the same for the same boot and name")
	}
	if Placeholder("OTHER", boot) == p || Placeholder("OPENAI_API_KEY", boot2) == p {
		t.Error("the same for another name or boot")
	}
	if !validPlaceholder(p) || validPlaceholder(strings.ToUpper(p)) || validPlaceholder(p[:len(p)-1]) || validPlaceholder("sk-"+p[3:]) {
		t.Error("validPlaceholder")
	}
	defer func() {
		if recover() == nil {
			t.Error("a short boot nonce was taken")
		}
	}()
	Placeholder("X", make([]byte, MinBootNonce-1))
}

func TestNewRules(t *testing.T) {
	boot := make([]byte, 16)
	a, b := Placeholder("A", boot), Placeholder("B", boot)
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
	a, b := Placeholder("A", boot), Placeholder("B", boot)
	rs, _ := NewRules([]Rule{{Name: "A", Placeholder: a, Hosts: []string{"a.test"}}, {Name: "B", Placeholder: b, Hosts: []string{"b.test"}}})
	basic := base64.StdEncoding.EncodeToString([]byte("user:" + b))
	for in, want := range map[string][]string{
		"GET / HTTP/1.1\r\nAuthorization: Bearer " + a + "\r\n\r\n": {"A"},
		"Authorization: basic " + basic + "\r\nX: " + a:             {"A", "B"},
		"X: " + a + a:                   {"A"},
		"X: " + Prefix + "0000":         nil,
		"Authorization: Basic !!notb64": nil,
		"":                              nil,
	} {
		if got := rs.Find([]byte(in)); !slices.Equal(got, want) {
			t.Errorf("Find(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestSwapIn(t *testing.T) {
	boot := make([]byte, 16)
	a, b := Placeholder("A", boot), Placeholder("B", boot)
	rules := []Rule{{Name: "A", Placeholder: a}, {Name: "B", Placeholder: b}}
	values := map[string][]byte{"A": []byte("alpha"), "B": []byte("a-much-longer-value-for-b")}
	basic := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	for in, want := range map[string]string{
		"Bearer " + a:         "Bearer alpha",
		a + "," + b + "," + a: "alpha,a-much-longer-value-for-b,alpha",
		Prefix + a + Prefix:   Prefix + "alpha" + Prefix,
		"nothing":             "nothing",
		basic(a + ":" + b):    basic("alpha:a-much-longer-value-for-b"),
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
