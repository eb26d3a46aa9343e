package secrets

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/internal/vaulttest"
)

func TestVaultScheme(t *testing.T) {
	srv := vaulttest.Start(t)
	v1 := []byte("vault-s3cret-version-1")
	v2 := []byte("vault-s3cret-version-2-rotated")
	srv.PutKV(t, "secret", "app", map[string]any{"password": string(v1), "port": 5432})
	ctx := context.Background()
	root := srv.Env(srv.RootToken)
	ref := Ref{"vault", "secret/data/app#password"}

	v, err := Resolve(ctx, ref, root)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	mustEqualValue(t, v, v1)
	assertNoLeak(t, v1, v)

	// Rotation: the next resolution sees the new version.
	if ver := srv.PutKV(t, "secret", "app", map[string]any{"password": string(v2)}); ver != 2 {
		t.Fatalf("version %d", ver)
	}
	v, err = Resolve(ctx, ref, root)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualValue(t, v, v2)

	// A token limited to this path reads it; another path is denied.
	limited := srv.ReadToken(t, "secret/data/app")
	v, err = Resolve(ctx, ref, srv.Env(limited))
	if err != nil {
		t.Fatalf("limited token: %v", err)
	}
	mustEqualValue(t, v, v2)
	srv.PutKV(t, "secret", "other", map[string]any{"password": "other-s3cret-value"})
	_, err = Resolve(ctx, Ref{"vault", "secret/data/other#password"}, srv.Env(limited))
	if !errors.Is(err, ErrDenied) || !IsDenied(err) || !strings.Contains(err.Error(), "(HTTP 403: permission denied)") {
		t.Fatalf("other path: %v", err)
	}

	// Missing field, missing secret, non-string field, deleted version.
	for r, kind := range map[string]error{
		"secret/data/app#nope":  ErrNoField,
		"secret/data/none#f":    ErrNotFound,
		"nomount/data/app#f":    ErrNotFound,
		"secret/data/other#f":   ErrNoField,
		"secret/data/numbers#n": ErrInvalid,
	} {
		if r == "secret/data/numbers#n" {
			srv.PutKV(t, "secret", "numbers", map[string]any{"n": 7})
		}
		_, err := Resolve(ctx, Ref{"vault", r}, root)
		if !errors.Is(err, kind) {
			t.Errorf("%s: %v, want %v", r, err, kind)
		}
		assertNoLeak(t, v2, err)
	}
	_, err = Resolve(ctx, Ref{"vault", "secret/data/app#nope"}, root)
	if want := `has no field "nope" (fields: password)`; !strings.Contains(err.Error(), want) {
		t.Fatalf("missing field: %v", err)
	}
	srv.DeleteKV(t, "secret", "other")
	if _, err := Resolve(ctx, Ref{"vault", "secret/data/other#password"}, root); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}

	// Revoked token: denied from the next resolution on.
	srv.RevokeToken(t, limited)
	_, err = Resolve(ctx, ref, srv.Env(limited))
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("revoked token: %v", err)
	}
	assertNoLeak(t, v2, err)
	assertNoLeak(t, []byte(limited), err) // the token is a credential too

	// Configuration errors.
	for name, env := range map[string]LookupEnv{
		"no addr":  envOf(map[string]string{"VAULT_TOKEN": srv.RootToken}),
		"no token": envOf(map[string]string{"VAULT_ADDR": srv.Addr}),
	} {
		if _, err := Resolve(ctx, ref, env); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}

	// Sealed: unavailable, with the reason; unsealed: readable again.
	srv.Seal(t)
	_, err = Resolve(ctx, ref, root)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "is sealed") {
		t.Fatalf("sealed: %v", err)
	}
	srv.Unseal(t)
	if v, err = Resolve(ctx, ref, root); err != nil {
		t.Fatalf("after unseal: %v", err)
	}
	mustEqualValue(t, v, v2)

	// Stopped: unavailable (connection refused), quickly.
	srv.Stop()
	start := time.Now()
	_, err = Resolve(ctx, ref, root)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("stopped: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a stopped server took %v to fail", d)
	}
	assertNoLeak(t, []byte(srv.RootToken), err)
}

func TestVaultRefSyntax(t *testing.T) {
	vr := &VaultResolver{}
	for in, want := range map[string]string{
		"secret/data/app#password":        "secret/data/app#password",
		"/secret/data/app/#password":      "secret/data/app#password",
		"team/kv/data/ci/deploy#token":    "team/kv/data/ci/deploy#token",
		"secret/data/data/x#f":            "secret/data/data/x#f",
		"secret/data/app#field#with#hash": "secret/data/app#field#with#hash",
	} {
		got, err := vr.Validate(in)
		if err != nil || got != want {
			t.Errorf("Validate(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"secret/app#f", "secret/data/app", "secret/data/app#", "/data/app#f", "secret/data/#f", "secret/data/../x#f", "secret/data/a//b#f", "secret/data/a?x#f"} {
		if _, err := vr.Validate(in); !errors.Is(err, ErrBadRef) {
			t.Errorf("Validate(%q): %v", in, err)
		}
	}
}
