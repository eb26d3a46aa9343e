package cli

import "testing"

// TestCaptureJSON: what --json makes of a stream: text as text, other
// bytes base64, the limit kept to with the total counted, and a character
// the limit cut in two dropped rather than turning the text into base64.
func TestCaptureJSON(t *testing.T) {
	for _, c := range []struct {
		limit  int
		writes []string
		want   streamJSON
	}{
		{10, []string{"hi ", "there"}, streamJSON{Data: "hi there", Encoding: "utf-8", Bytes: 8}},
		{10, []string{""}, streamJSON{Data: "", Encoding: "utf-8"}},
		{10, []string{"\xff\x00"}, streamJSON{Data: "/wA=", Encoding: "base64", Bytes: 2}},
		{4, []string{"ab", "cdef"}, streamJSON{Data: "abcd", Encoding: "utf-8", Bytes: 6, Truncated: true}},
		{0, []string{"x"}, streamJSON{Data: "", Encoding: "utf-8", Bytes: 1, Truncated: true}},
		{3, []string{"a€"}, streamJSON{Data: "a", Encoding: "utf-8", Bytes: 4, Truncated: true}},              // € is 3 bytes
		{3, []string{"\xffab", "c"}, streamJSON{Data: "/2Fi", Encoding: "base64", Bytes: 4, Truncated: true}}, // not a cut: binary
		{2, []string{"a\xe2\x82"}, streamJSON{Data: "a", Encoding: "utf-8", Bytes: 3, Truncated: true}},
	} {
		cp := &capture{limit: c.limit}
		for _, w := range c.writes {
			if n, err := cp.Write([]byte(w)); n != len(w) || err != nil {
				t.Fatalf("Write %q: %d %v", w, n, err)
			}
		}
		if got := cp.json(); got != c.want {
			t.Errorf("limit %d, writes %q: got %+v, want %+v", c.limit, c.writes, got, c.want)
		}
	}
}
