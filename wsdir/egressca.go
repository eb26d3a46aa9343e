package wsdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/microagent-dev/microagent/credswap"
)

// The workspace CA of the secret swap (--secret-egress), kept in the
// workspace folder: the guest's trust stores (on its disk, in its
// snapshots) hold the certificate, so every boot, restore and fork must
// terminate TLS with the same one. The key is host-side state only: it is
// never in a snapshot and never enters the guest.
const (
	EgressCACert = "egress-ca.crt"
	EgressCAKey  = "egress-ca.key"
)

// EgressCA returns the workspace CA (PEM certificate and key), made and
// stored on first use. The caller zeroes the key.
func (w *Dir) EgressCA() (cert, key []byte, err error) {
	cert, cerr := os.ReadFile(w.Path(EgressCACert))
	key, kerr := os.ReadFile(w.Path(EgressCAKey))
	switch {
	case cerr == nil && kerr == nil:
		if _, err := credswap.LoadCA(cert, key); err != nil {
			clear(key)
			return nil, nil, &Error{Name: w.Name, Op: "read the workspace CA", Err: fmt.Errorf("%w: delete %s and %s to make a new one (the guest then trusts it from its next start)", err, EgressCACert, EgressCAKey)}
		}
		return cert, key, nil
	case !errors.Is(cerr, fs.ErrNotExist) && cerr != nil:
		return nil, nil, &Error{Name: w.Name, Op: "read the workspace CA", Err: cerr}
	case !errors.Is(kerr, fs.ErrNotExist) && kerr != nil:
		return nil, nil, &Error{Name: w.Name, Op: "read the workspace CA", Err: kerr}
	}
	clear(key)
	if cert, key, err = credswap.NewCA(); err != nil {
		return nil, nil, &Error{Name: w.Name, Op: "make the workspace CA", Err: err}
	}
	// The key first: a certificate without its key is never left behind.
	if err := WriteFileAtomic(w.Path(EgressCAKey), key); err != nil {
		clear(key)
		return nil, nil, &Error{Name: w.Name, Op: "store the workspace CA", Err: err}
	}
	if err := WriteFileAtomic(w.Path(EgressCACert), cert); err != nil {
		clear(key)
		return nil, nil, &Error{Name: w.Name, Op: "store the workspace CA", Err: err}
	}
	return cert, key, nil
}

// CopyEgressCA gives w the CA of src (a fork's guest trusts its source's),
// when src has one.
func (w *Dir) CopyEgressCA(src *Dir) error {
	for _, f := range []string{EgressCAKey, EgressCACert} {
		b, err := os.ReadFile(src.Path(f))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return &Error{Name: w.Name, Op: "copy the workspace CA", Err: err}
		}
		err = WriteFileAtomic(w.Path(f), b)
		clear(b)
		if err != nil {
			return &Error{Name: w.Name, Op: "copy the workspace CA", Err: err}
		}
	}
	return nil
}
