package credswap

import (
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"
)

// CAName is the workspace CA's subject common name, as the guest's trust
// store lists it.
const CAName = "microagent workspace CA"

const (
	// CAValidity bounds the workspace CA's life: a workspace older than
	// this needs a new CA (and the guest its certificate again).
	CAValidity = 365 * 24 * time.Hour
	// leafValidity is a minted leaf's life; a cached leaf is minted again
	// once less than leafRenew of it remains.
	leafValidity = 24 * time.Hour
	leafRenew    = time.Hour
	// clockSkew backdates certificates: a guest clock a little behind the
	// host's must not see them as not yet valid.
	clockSkew = time.Hour
	// maxLeaves bounds the leaf cache: a .SUFFIX rule lets the guest ask
	// for any number of names within it, least recently used go first.
	maxLeaves = 64
	// maxPEM bounds the CA material LoadCA reads.
	maxPEM = 16 << 10
)

// NewCA generates a workspace CA: an ECDSA P-256 key and a self-signed
// certificate named CAName, valid for CAValidity, that may sign leaf
// certificates only (key usage certSign, no intermediates). It returns
// both as PEM: the certificate goes into the guest's trust stores, the key
// only to the network helper (LoadCA); the key never enters the guest.
//
// The CA carries no name constraints: it stays in the guest's trust store
// across boots, snapshots and forks while the hosts of --secret-egress may
// change at any start, and clients enforce constraints unevenly anyway.
// What bounds it is that only the helper holds the key, the helper mints
// leaves only for names a Rule covers, and each workspace has its own CA.
func NewCA() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("workspace CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: CAName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("workspace CA certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("workspace CA key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	clear(kder)
	return certPEM, keyPEM, nil
}

// serial is a random 128-bit certificate serial number.
func serial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand)
	b[0] &= 0x7f // positive
	return new(big.Int).SetBytes(b)
}

// CA mints leaf certificates for the names the interceptor terminates TLS
// for, signed by the workspace CA; safe for concurrent use.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey

	mu     sync.Mutex
	leaves map[string]*list.Element // host -> element of lru (a *leaf)
	lru    list.List                // most recently used first
	now    func() time.Time         // tests move the clock
}

type leaf struct {
	host  string
	cert  *tls.Certificate
	until time.Time // NotAfter
}

// LoadCA reads the workspace CA that NewCA made.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	if len(certPEM) > maxPEM || len(keyPEM) > maxPEM {
		return nil, fmt.Errorf("workspace CA: more than %d bytes of PEM", maxPEM)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("workspace CA: no CERTIFICATE PEM block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("workspace CA certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("workspace CA: the certificate is not a CA that may sign certificates")
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" {
		return nil, errors.New("workspace CA: no PRIVATE KEY PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		// The parser's error says nothing of the key's bytes.
		return nil, fmt.Errorf("workspace CA key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("workspace CA: the key does not belong to the certificate")
	}
	return &CA{cert: cert, key: key, leaves: map[string]*list.Element{}, now: time.Now}, nil
}

// Certificate is the CA's certificate (what the guest trusts).
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Leaf returns a certificate for host signed by the CA, minted once and
// cached until close to its end (at most maxLeaves hosts are cached).
// The caller decides which hosts deserve one.
func (ca *CA) Leaf(host string) (*tls.Certificate, error) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" {
		return nil, errors.New("a leaf certificate needs a host name")
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	now := ca.now()
	if e, ok := ca.leaves[host]; ok {
		l := e.Value.(*leaf)
		if now.Add(leafRenew).Before(l.until) {
			ca.lru.MoveToFront(e)
			return l.cert, nil
		}
		ca.lru.Remove(e)
		delete(ca.leaves, host)
	}
	// Minting under the lock: one P-256 key and signature take well under
	// a millisecond, and two flows to a new host then mint it once.
	c, until, err := ca.mint(host, now)
	if err != nil {
		return nil, err
	}
	ca.leaves[host] = ca.lru.PushFront(&leaf{host: host, cert: c, until: until})
	for ca.lru.Len() > maxLeaves {
		old := ca.lru.Back()
		ca.lru.Remove(old)
		delete(ca.leaves, old.Value.(*leaf).host)
	}
	return c, nil
}

func (ca *CA) mint(host string, now time.Time) (*tls.Certificate, time.Time, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("leaf key: %w", err)
	}
	until := now.Add(leafValidity)
	if until.After(ca.cert.NotAfter) {
		until = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     until,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("leaf certificate for %s: %w", host, err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, until, nil
}
