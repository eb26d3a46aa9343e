package vaulttest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestServer(t *testing.T) {
	userHome, _ := os.UserHomeDir()
	tokenFile := filepath.Join(userHome, ".vault-token")
	_, statErr := os.Stat(tokenFile)
	hadToken := statErr == nil

	s := Start(t)
	if v := s.PutKV(t, "secret", "x", map[string]any{"k": "test-value-1"}); v != 1 {
		t.Fatalf("version %d", v)
	}
	tok := s.ReadToken(t, "secret/data/x")
	sec, err := s.Client(t, tok).KVv2("secret").Get(context.Background(), "x")
	if err != nil || sec.Data["k"] != "test-value-1" {
		t.Fatalf("read with a limited token: %v", err)
	}
	if _, err := s.Client(t, tok).KVv2("secret").Put(context.Background(), "x", map[string]any{"k": "v"}); err == nil {
		t.Fatal("a read-only token could write")
	}
	s.RevokeToken(t, tok)
	if _, err := s.Client(t, tok).KVv2("secret").Get(context.Background(), "x"); err == nil {
		t.Fatal("a revoked token could read")
	}
	s.Seal(t)
	if _, err := s.Client(t, "").KVv2("secret").Get(context.Background(), "x"); err == nil {
		t.Fatal("a sealed server answered")
	}
	s.Unseal(t)
	if _, err := s.Client(t, "").KVv2("secret").Get(context.Background(), "x"); err != nil {
		t.Fatalf("after unseal: %v", err)
	}
	if addr, ok := s.Env("t")("VAULT_ADDR"); !ok || addr != s.Addr {
		t.Fatal("Env")
	}
	s.Stop()
	s.Stop()
	if _, err := s.Client(t, "").KVv2("secret").Get(context.Background(), "x"); err == nil {
		t.Fatal("a stopped server answered")
	}
	// Dev mode's token file went to the server's private HOME.
	if _, err := os.Stat(tokenFile); !hadToken && err == nil {
		t.Fatal("the dev server wrote ~/.vault-token of the user")
	}
}

func TestBinaryOverride(t *testing.T) {
	t.Setenv(BinEnv, filepath.Join(t.TempDir(), "absent"))
	if Binary() != "" {
		t.Fatal("a missing override was accepted")
	}
}
