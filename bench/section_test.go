package main

import (
	"slices"
	"testing"
)

// Every -sections name has exactly one section, and every section a name
// in the report order.
func TestSectionNames(t *testing.T) {
	if len(sections) != len(allSections) {
		t.Fatalf("%d sections, %d names", len(sections), len(allSections))
	}
	for _, s := range sections {
		if !slices.Contains(allSections, s.name()) {
			t.Errorf("section %q is not in allSections", s.name())
		}
	}
	for _, n := range allSections {
		if sectionNamed(n) == nil {
			t.Errorf("no section named %q", n)
		}
	}
}
