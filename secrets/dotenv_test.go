package secrets

import (
	"bytes"
	"strings"
	"testing"
)

func parseMap(t *testing.T, src string) map[string]string {
	t.Helper()
	entries, err := ParseDotenv([]byte(src))
	if err != nil {
		t.Fatalf("ParseDotenv: %v", err)
	}
	m := map[string]string{}
	for _, e := range entries {
		m[e.Key] = string(e.Value.Bytes())
	}
	return m
}

func TestParseDotenv(t *testing.T) {
	src := "\xef\xbb\xbf# a comment\n" +
		"   # indented comment\n" +
		"\n" +
		"PLAIN=value\n" +
		"SPACED = spaced value  \n" +
		"export EXPORTED=yes\n" +
		"export\tTABBED=tab\n" +
		"INLINE=abc # comment\n" +
		"HASH=abc#def\n" +
		"HASH_START=#notcomment\n" +
		"EMPTY=\n" +
		"EMPTY_COMMENT= # only a comment\n" +
		"SINGLE2='a \\n $HOME \"q\"' # c\n" +
		"DOUBLE=\"a\\nb\\tc\\\"d\\\\e\\$f\\xg\"\n" +
		"MULTI=\"line1\nline2\"\n" +
		"MULTI_SINGLE='l1\nl2'\n" +
		"CRLF=crlf\r\n" +
		"NOINTERP=$PLAIN${PLAIN}\n" +
		"export=notaprefix\n" +
		"LAST=no-newline"
	got := parseMap(t, src)
	want := map[string]string{
		"PLAIN":         "value",
		"SPACED":        "spaced value",
		"EXPORTED":      "yes",
		"TABBED":        "tab",
		"INLINE":        "abc",
		"HASH":          "abc#def",
		"HASH_START":    "#notcomment",
		"EMPTY":         "",
		"EMPTY_COMMENT": "",
		"SINGLE2":       `a \n $HOME "q"`,
		"DOUBLE":        "a\nb\tc\"d\\e$f\\xg",
		"MULTI":         "line1\nline2",
		"MULTI_SINGLE":  "l1\nl2",
		"CRLF":          "crlf",
		"NOINTERP":      "$PLAIN${PLAIN}",
		"export":        "notaprefix",
		"LAST":          "no-newline",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d keys, want %d", len(got), len(want))
	}
}

func TestParseDotenvLineNumbers(t *testing.T) {
	entries, err := ParseDotenv([]byte("A=1\nB=\"x\ny\"\n\nC='p\nq\nr'\nD=4\n"))
	if err != nil {
		t.Fatal(err)
	}
	lines := []int{}
	for _, e := range entries {
		lines = append(lines, e.Line)
	}
	if len(lines) != 4 || lines[0] != 1 || lines[1] != 2 || lines[2] != 5 || lines[3] != 8 {
		t.Fatalf("lines %v", lines)
	}
}

func TestParseDotenvErrors(t *testing.T) {
	for src, want := range map[string]string{
		"A=1\nnot a line\n":                 "line 2: want '=' after key not",
		"A=1\n=x\n":                         "line 2: want KEY=VALUE",
		"1A=x":                              "line 1: want KEY=VALUE",
		"A-B=x":                             "line 1: want '=' after key A",
		"A":                                 "line 1: want '=' after key A",
		"A=1\nA=2":                          "line 2: key A already assigned on line 1",
		"K='s3cr3t-unterminated":            "line 1: value of K: unterminated single quote",
		"K=\"s3cr3t-unterminated":           "line 1: value of K: unterminated double quote",
		"K=\"s3cr3t-value\"trailing-s3cr3t": "line 1: value of K: unexpected text after the closing quote",
		"K='it''s-s3cr3t'":                  "line 1: value of K: unexpected text after the closing quote",
		"export K":                          "line 1: want '=' after key K",
	} {
		_, err := ParseDotenv([]byte(src))
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: %v, want %q", src, err, want)
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%q: error shows the content: %v", src, err)
		}
	}
}

func TestParseDotenvCopies(t *testing.T) {
	data := []byte("K=copied-value\n")
	entries, err := ParseDotenv(data)
	if err != nil {
		t.Fatal(err)
	}
	clear(data)
	mustEqualValue(t, entries[0].Value, []byte("copied-value"))
	ZeroDotenv(entries)
	if entries[0].Value.Len() != 0 {
		t.Fatal("ZeroDotenv")
	}
}

// renderDotenv writes entries back as KEY="escaped" lines.
func renderDotenv(entries []DotenvEntry) []byte {
	var b bytes.Buffer
	for _, e := range entries {
		b.WriteString(e.Key)
		b.WriteString("=\"")
		for _, c := range e.Value.Bytes() {
			if c == '\\' || c == '"' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
		b.WriteString("\"\n")
	}
	return b.Bytes()
}
