package wsdir

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, n := range []string{"a", "app", "0", "my_ws-2", strings.Repeat("x", 63)} {
		if err := ValidateName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range []string{"", "-a", "_a", "App", "a.b", "a/b", "..", "a b", strings.Repeat("x", 64), "é"} {
		if err := ValidateName(n); !errors.Is(err, ErrInvalidName) {
			t.Errorf("%q accepted (%v)", n, err)
		}
	}
}
