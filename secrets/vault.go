package secrets

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// DefaultVaultTimeout bounds one Vault read when VaultResolver.Timeout is 0.
const DefaultVaultTimeout = 15 * time.Second

// VaultResolver implements vault:<mount>/data/<path>#<field>: one string
// field of a KV version 2 secret in HashiCorp Vault or OpenBao, read with
// Vault's official Go client. It is configured by VAULT_ADDR (required),
// VAULT_TOKEN (required), VAULT_NAMESPACE and VAULT_CACERT, looked up in
// the resolution's environment; the client also honours its other VAULT_*
// variables (VAULT_SKIP_VERIFY, VAULT_CLIENT_CERT ...) from the process
// environment.
//
// Values come back from the client as Go strings, which cannot be zeroed;
// the Value made from them can.
type VaultResolver struct {
	// Timeout bounds one read; 0 means DefaultVaultTimeout.
	Timeout time.Duration
}

// Plaintext is false: the value is fetched from a secret manager.
func (*VaultResolver) Plaintext() bool { return false }

type vaultRef struct {
	mount, path, field string
}

func (r vaultRef) String() string { return r.mount + "/data/" + r.path }

func parseVaultRef(ref string) (vaultRef, error) {
	const want = "want vault:<mount>/data/<path>#<field>, e.g. vault:secret/data/app#password"
	// The first '#' ends the path: paths cannot hold one, field names can.
	loc, field, ok := strings.Cut(ref, "#")
	if !ok || field == "" {
		return vaultRef{}, Errorf(ErrBadRef, "vault reference: no #<field>: %s", want)
	}
	mount, path, ok := strings.Cut(loc, "/data/")
	if !ok {
		return vaultRef{}, Errorf(ErrBadRef, "vault reference: no /data/ (KV version 2 path): %s", want)
	}
	mount = strings.Trim(mount, "/")
	path = strings.Trim(path, "/")
	if mount == "" || path == "" {
		return vaultRef{}, Errorf(ErrBadRef, "vault reference: empty mount or path: %s", want)
	}
	for _, seg := range strings.Split(mount+"/"+path, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return vaultRef{}, Errorf(ErrBadRef, "vault reference: empty, '.' or '..' path segment: %s", want)
		}
	}
	if strings.ContainsAny(loc, "?%") {
		return vaultRef{}, Errorf(ErrBadRef, "vault reference: '?' and '%%' are not allowed in the path: %s", want)
	}
	return vaultRef{mount: mount, path: path, field: field}, nil
}

// Validate checks the reference's syntax.
func (*VaultResolver) Validate(ref string) (string, error) {
	r, err := parseVaultRef(ref)
	if err != nil {
		return "", err
	}
	return r.String() + "#" + r.field, nil
}

// Resolve reads the field from the latest version of the secret.
func (vr *VaultResolver) Resolve(ctx context.Context, ref string, env LookupEnv) (*Value, error) {
	r, err := parseVaultRef(ref)
	if err != nil {
		return nil, err
	}
	addr, _ := env("VAULT_ADDR")
	if addr == "" {
		return nil, Errorf(ErrConfig, "VAULT_ADDR is not set: export VAULT_ADDR=https://<vault-host>:8200")
	}
	token, _ := env("VAULT_TOKEN")
	if token == "" {
		return nil, Errorf(ErrConfig, "VAULT_TOKEN is not set: export a Vault token that may read %s", r)
	}
	timeout := vr.Timeout
	if timeout <= 0 {
		timeout = DefaultVaultTimeout
	}
	cfg := vault.DefaultConfig()
	if cfg.Error != nil {
		return nil, Errorf(ErrConfig, "vault client configuration: %v", cfg.Error)
	}
	cfg.Address = addr
	cfg.MaxRetries = 0 // fail fast: a sealed or denying Vault will not change within a retry
	cfg.Timeout = timeout
	if ca, _ := env("VAULT_CACERT"); ca != "" {
		if err := cfg.ConfigureTLS(&vault.TLSConfig{CACert: ca}); err != nil {
			return nil, Errorf(ErrConfig, "VAULT_CACERT %s: %v", ca, err)
		}
	}
	client, err := vault.NewClient(cfg)
	if err != nil {
		return nil, Errorf(ErrConfig, "vault client for %s: %v", addr, err)
	}
	defer cfg.HttpClient.CloseIdleConnections()
	client.SetToken(token)
	if ns, _ := env("VAULT_NAMESPACE"); ns != "" {
		client.SetNamespace(ns)
	} else {
		client.ClearNamespace()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := client.KVv2(r.mount).Get(ctx, r.path)
	if err != nil {
		return nil, classifyVault(addr, r, err)
	}
	if s == nil || s.Data == nil {
		return nil, Errorf(ErrNotFound, "vault %s at %s: the latest version is deleted or destroyed", r, addr)
	}
	raw, ok := s.Data[r.field]
	if !ok {
		fields := make([]string, 0, len(s.Data))
		for k := range s.Data {
			fields = append(fields, k)
		}
		slices.Sort(fields)
		return nil, Errorf(ErrNoField, "vault %s at %s has no field %q (fields: %s)", r, addr, r.field, strings.Join(fields, ", "))
	}
	str, ok := raw.(string)
	if !ok {
		return nil, Errorf(ErrInvalid, "vault %s at %s: field %q holds a %s, not a string", r, addr, r.field, jsonKind(raw))
	}
	return NewValue([]byte(str)), nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	default:
		return "number"
	}
}

// classifyVault maps a client error to a kind with an actionable message.
// Vault's own error strings (for instance "permission denied", "Vault is
// sealed") are kept; they never contain secret data.
func classifyVault(addr string, r vaultRef, err error) error {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		detail := ""
		if !re.RawError {
			if d := vaultDetail(re.Errors); d != "" {
				detail = ": " + d
			}
		}
		switch {
		case re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized:
			return Errorf(ErrDenied, "vault at %s denied reading %s (HTTP %d%s): check that VAULT_TOKEN is valid (not expired or revoked) and its policy allows read on %s",
				addr, r, re.StatusCode, detail, r)
		case re.StatusCode == http.StatusNotFound:
			return Errorf(ErrNotFound, "vault %s at %s not found (HTTP 404%s)", r, addr, detail)
		case re.StatusCode == http.StatusServiceUnavailable && strings.Contains(strings.ToLower(detail), "sealed"):
			return Errorf(ErrUnavailable, "vault at %s is sealed (HTTP 503%s): unseal it, then retry", addr, detail)
		case re.StatusCode == http.StatusBadRequest:
			return Errorf(ErrInvalid, "vault at %s rejected the read of %s (HTTP 400%s): is %q a KV version 2 mount?", addr, r, detail, r.mount)
		default:
			return Errorf(ErrUnavailable, "vault at %s failed reading %s (HTTP %d%s): retry later", addr, r, re.StatusCode, detail)
		}
	}
	if errors.Is(err, vault.ErrSecretNotFound) {
		return Errorf(ErrNotFound, "vault %s at %s not found", r, addr)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Errorf(ErrUnavailable, "vault at %s did not answer in time reading %s: is it up?", addr, r)
	}
	if errors.Is(err, context.Canceled) {
		return Errorf(ErrUnavailable, "vault read of %s canceled", r)
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &oe) || errors.As(err, &ne) {
		return Errorf(ErrUnavailable, "vault at %s unreachable reading %s: %v: is VAULT_ADDR right and the server up?", addr, r, innermost(err))
	}
	return Errorf(ErrUnavailable, "vault at %s: reading %s: %v", addr, r, oneLine(err.Error(), 300))
}

// vaultDetail condenses Vault's error list ("1 error occurred:\n\t* permission
// denied") to "permission denied".
func vaultDetail(errs []string) string {
	var parts []string
	for _, e := range errs {
		for _, line := range strings.Split(e, "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasSuffix(line, "occurred:") {
				continue
			}
			parts = append(parts, strings.TrimPrefix(line, "* "))
		}
	}
	return oneLine(strings.Join(parts, "; "), 200)
}

// innermost returns the deepest wrapped error (e.g. "connection refused").
func innermost(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// oneLine squeezes s to one printable line of at most n bytes.
func oneLine(s string, n int) string {
	var b strings.Builder
	space := false
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			if !space && b.Len() > 0 {
				b.WriteByte(' ')
			}
			space = true
			continue
		}
		space = c == ' '
		b.WriteRune(c)
		if b.Len() >= n {
			b.WriteString("...")
			break
		}
	}
	return strings.TrimSpace(b.String())
}
