package credswap

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// PlaceholderPrefix starts every placeholder (see the package doc for the
// shape).
const PlaceholderPrefix = "MICROAGENT_PLACEHOLDER_"

const (
	// PlaceholderTagLen is the hex digits after PlaceholderPrefix: 160
	// bits of HMAC.
	PlaceholderTagLen = 40
	// PlaceholderLen is the length of every placeholder.
	PlaceholderLen = len(PlaceholderPrefix) + PlaceholderTagLen
	// MinBootNonce is the shortest boot nonce Placeholder takes.
	MinBootNonce = 16
)

// Placeholder is the stand-in the guest holds for the secret name during
// the boot whose random nonce is boot (at least MinBootNonce bytes: a
// shorter one is a programming error and panics). The same name and boot
// give the same placeholder; another boot or name gives another one, and
// none says anything about the value.
func Placeholder(name string, boot []byte) string {
	if len(boot) < MinBootNonce {
		panic(fmt.Sprintf("credswap.Placeholder: a boot nonce of %d bytes, want at least %d", len(boot), MinBootNonce))
	}
	m := hmac.New(sha256.New, boot)
	m.Write([]byte("microagent placeholder\x00" + name))
	return PlaceholderPrefix + hex.EncodeToString(m.Sum(nil))[:PlaceholderTagLen]
}

// ValidPlaceholder reports whether p has Placeholder's shape.
func ValidPlaceholder(p string) bool {
	tag, ok := strings.CutPrefix(p, PlaceholderPrefix)
	if !ok || len(tag) != PlaceholderTagLen {
		return false
	}
	_, err := hex.DecodeString(tag)
	return err == nil && strings.ToLower(tag) == tag
}
