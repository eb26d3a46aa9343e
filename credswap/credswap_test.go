package credswap

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"regexp"
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
	if !ValidPlaceholder(p) || ValidPlaceholder(strings.ToUpper(p)) || ValidPlaceholder(p[:len(p)-1]) || ValidPlaceholder("sk-"+p[3:]) {
		t.Error("validPlaceholder")
	}
	defer func() {
		if recover() == nil {
			t.Error("a short boot nonce was taken")
		}
	}()
	Placeholder("X", make([]byte, MinBootNonce-1))
}
