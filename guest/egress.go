//go:build linux

package guest

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/channel"
)

// CABundlePaths are the trust bundles of the usual distributions, in the
// order the first one found is taken for EgressCABundle: Debian and
// Ubuntu, Alpine, RHEL and Fedora. The workspace CA of the secret swap is
// appended to each that the image has.
var CABundlePaths = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/ssl/cert.pem",
	"/etc/pki/tls/certs/ca-bundle.crt",
}

// Where the agent puts the workspace CA, alone and with the image's roots,
// and the variables every exec gets when it did.
const (
	EgressCAFile   = "/etc/microagent/egress-ca.pem"
	EgressCABundle = "/etc/microagent/ca-bundle.pem"
)

// maxBundle bounds a trust bundle the agent reads to extend it.
const maxBundle = 8 << 20

// checkEgress validates the placeholders and the CA of a delivery before
// the key exchange, as the sealed items are: the host is trusted, but a
// malformed request must not leave half a delivery.
func checkEgress(req *channel.SecretsRequest) error {
	seen := map[string]bool{}
	for _, it := range req.Items {
		seen[it.Name] = true
	}
	for _, p := range req.Placeholders {
		switch {
		case !secretName.MatchString(p.Name):
			return fmt.Errorf("placeholder name %q is not a valid name", p.Name)
		case seen[p.Name]:
			return fmt.Errorf("placeholder %s: the name is delivered twice", p.Name)
		case p.Value == "" || len(p.Value) > channel.MaxPlaceholder:
			return fmt.Errorf("placeholder %s: %d bytes, want 1 to %d", p.Name, len(p.Value), channel.MaxPlaceholder)
		case strings.IndexFunc(p.Value, func(c rune) bool { return c <= ' ' || c >= 0x7f || c == '=' || c == '"' || c == '\'' }) >= 0:
			return fmt.Errorf("placeholder %s: only printable ASCII without spaces, quotes or '='", p.Name)
		}
		seen[p.Name] = true
	}
	if len(req.EgressCA) == 0 {
		return nil
	}
	if len(req.EgressCA) > channel.MaxEgressCA {
		return fmt.Errorf("egress CA: %d bytes, at most %d", len(req.EgressCA), channel.MaxEgressCA)
	}
	b, rest := pem.Decode(req.EgressCA)
	if b == nil || b.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		return errors.New("egress CA: want one PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil || !c.IsCA {
		return errors.New("egress CA: not a CA certificate")
	}
	return nil
}

// writePlaceholders writes each placeholder to the secrets folder as a
// materialized secret is written, and keeps them for the exec environment.
func (a *Agent) writePlaceholders(req *channel.SecretsRequest, id identity) error {
	for _, p := range req.Placeholders {
		if err := writeSecret(filepath.Join(a.secrets.dir, p.Name), []byte(p.Value), id); err != nil {
			return fmt.Errorf("placeholder %s: %v", p.Name, err)
		}
	}
	var env []string
	for _, p := range req.Placeholders {
		env = append(env, p.Name+"="+p.Value)
	}
	if len(req.EgressCA) > 0 {
		if err := installCA(a.secrets.root, req.EgressCA); err != nil {
			return fmt.Errorf("egress CA: %v", err)
		}
		env = append(env, "SSL_CERT_FILE="+EgressCABundle, "REQUESTS_CA_BUNDLE="+EgressCABundle, "NODE_EXTRA_CA_CERTS="+EgressCAFile)
	}
	a.mu.Lock()
	a.secrets.egressEnv = env
	a.mu.Unlock()
	return nil
}

// egressEnvironment is what every exec gets for the secret swap.
func (a *Agent) egressEnvironment() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.secrets.egressEnv
}

// installCA adds caPEM to the image's trust bundles (once: a later
// delivery, a restore, a fork find it there) and writes EgressCAFile and
// EgressCABundle, all under root ("" is /). No symbolic link at any of
// these paths is followed: a link planted by the workload is left as it
// is, not written through.
func installCA(r string, caPEM []byte) error {
	var system []byte
	for _, p := range CABundlePaths {
		b, err := appendOnce(filepath.Join(r, p), caPEM)
		if err != nil {
			return err
		}
		if system == nil && b != nil {
			system = b
		}
	}
	if system == nil {
		system = caPEM
	}
	if err := os.MkdirAll(filepath.Join(r, filepath.Dir(EgressCAFile)), 0o755); err != nil {
		return err
	}
	if err := writeSystemFile(filepath.Join(r, EgressCAFile), caPEM); err != nil {
		return err
	}
	return writeSystemFile(filepath.Join(r, EgressCABundle), system)
}

// appendOnce appends caPEM to the bundle at path unless it holds it, and
// returns the bundle's content with it; nil when there is no regular file
// at path.
func appendOnce(path string, caPEM []byte) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ELOOP) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(f, maxBundle+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxBundle {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxBundle)
	}
	if bytes.Contains(b, bytes.TrimSpace(caPEM)) {
		return b, nil
	}
	add := caPEM
	if len(b) > 0 && b[len(b)-1] != '\n' {
		add = append([]byte("\n"), caPEM...)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		return nil, err
	}
	if _, err := f.Write(add); err != nil {
		return nil, err
	}
	return append(b, add...), nil
}
