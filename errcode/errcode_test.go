package errcode

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"testing"
)

var errA = errors.New("a happened")

func init() { Register("test_a", errA) }

// TestRoundTrip: a wrapped sentinel survives a hop as codes and message.
func TestRoundTrip(t *testing.T) {
	sent := fmt.Errorf("workspace x: %w: %w", errA, fs.ErrNotExist)
	codes := Codes(sent)
	if !slices.Contains(codes, "test_a") || !slices.Contains(codes, "not_exist") {
		t.Fatalf("codes %v", codes)
	}
	got := New(sent.Error(), codes)
	if got.Error() != sent.Error() || !errors.Is(got, errA) || !errors.Is(got, fs.ErrNotExist) || errors.Is(got, fs.ErrExist) {
		t.Fatalf("rebuilt %v", got)
	}
	// Wrapping the rebuilt error keeps the match.
	if !errors.Is(fmt.Errorf("start: %w", got), errA) {
		t.Fatal("lost through wrapping")
	}
}

// TestUnknownCodes: codes from a newer peer are ignored, not fatal.
func TestUnknownCodes(t *testing.T) {
	got := New("something new", []Code{"from_the_future"})
	if got.Error() != "something new" || errors.Is(got, errA) {
		t.Fatalf("%v", got)
	}
	if Codes(errors.New("plain")) != nil || Codes(nil) != nil {
		t.Fatal("codes for an error that wraps no sentinel")
	}
}

func TestRegisterTwicePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	Register("test_a", errors.New("other"))
}
