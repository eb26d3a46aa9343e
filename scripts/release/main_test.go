package main

import "testing"

func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":                  "1.2.3",
		"v1.2.3-dirty":            "1.2.3+dirty",
		"v1.2.3-4-gabcdef0":       "1.2.3+4.gabcdef0",
		"v1.2.3-4-gabcdef0-dirty": "1.2.3+4.gabcdef0.dirty",
		"v1.3.0-rc1":              "1.3.0~rc1",
		"v1.3.0-rc1-2-g0123abc":   "1.3.0~rc1+2.g0123abc",
		"b648246":                 "0.0.0+git.b648246",
		"b648246-dirty":           "0.0.0+git.b648246.dirty",
	} {
		if got := debVersion(in); got != want {
			t.Errorf("debVersion(%q) = %q, want %q", in, got, want)
		}
	}
}
