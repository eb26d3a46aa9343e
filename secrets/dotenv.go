package secrets

import (
	"bytes"
	"fmt"
)

// DotenvEntry is one KEY=VALUE assignment of a dotenv file.
type DotenvEntry struct {
	// Key is the variable name.
	Key string
	// Value is the unquoted, unescaped value; it prints as redacted.
	Value *Value
	// Line is the 1-based line the assignment starts on.
	Line int
}

// ZeroDotenv zeroes every entry's value.
func ZeroDotenv(entries []DotenvEntry) {
	for _, e := range entries {
		e.Value.Zero()
	}
}

// ParseDotenv parses a dotenv file held in data. Each value is copied into
// its own buffer, so the caller may zero data afterwards. The rules:
//
//   - blank lines and lines starting with '#' are skipped;
//   - "export " before a key is ignored;
//   - a key is [A-Za-z_][A-Za-z0-9_]*, optionally surrounded by blanks, then '=';
//   - an unquoted value runs to the end of the line, ends before a " #"
//     comment, and loses surrounding blanks;
//   - a single-quoted value is literal and may span lines;
//   - a double-quoted value may span lines and understands \n \r \t \" \\ \$
//     (any other backslash is kept as is);
//   - after a closing quote only blanks and a "# comment" may follow;
//   - nothing is interpolated ($VAR stays as written): this is a conduit;
//   - a key assigned twice is an error (ambiguous, so fail closed).
//
// Errors give the line number and at most the key, never the content.
func ParseDotenv(data []byte) ([]DotenvEntry, error) {
	p := dotenvParser{data: data, line: 1}
	entries, err := p.parse()
	if err != nil {
		ZeroDotenv(entries)
		return nil, err
	}
	return entries, nil
}

type dotenvParser struct {
	data []byte
	pos  int
	line int
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

func isKeyStart(c byte) bool { return c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }

func isKeyChar(c byte) bool { return isKeyStart(c) || c >= '0' && c <= '9' }

func (p *dotenvParser) peek() (byte, bool) {
	if p.pos < len(p.data) {
		return p.data[p.pos], true
	}
	return 0, false
}

func (p *dotenvParser) skipBlanks() {
	for p.pos < len(p.data) && isBlank(p.data[p.pos]) {
		p.pos++
	}
}

// skipToEOL moves past the rest of the line, including its newline.
func (p *dotenvParser) skipToEOL() {
	i := bytes.IndexByte(p.data[p.pos:], '\n')
	if i < 0 {
		p.pos = len(p.data)
		return
	}
	p.pos += i + 1
	p.line++
}

// atEOL reports whether only "\r" remains before the newline or the end.
func (p *dotenvParser) atEOL() bool {
	c, ok := p.peek()
	if !ok || c == '\n' {
		return true
	}
	return c == '\r' && (p.pos+1 == len(p.data) || p.data[p.pos+1] == '\n')
}

func (p *dotenvParser) parse() ([]DotenvEntry, error) {
	var entries []DotenvEntry
	seen := map[string]int{}
	if bytes.HasPrefix(p.data, []byte("\xef\xbb\xbf")) { // UTF-8 byte order mark
		p.pos = 3
	}
	for p.pos < len(p.data) {
		p.skipBlanks()
		if p.atEOL() {
			p.skipToEOL()
			continue
		}
		if c, _ := p.peek(); c == '#' {
			p.skipToEOL()
			continue
		}
		start := p.line
		p.skipExport()
		key := p.key()
		if key == "" {
			return entries, fmt.Errorf("line %d: want KEY=VALUE with KEY matching [A-Za-z_][A-Za-z0-9_]*", start)
		}
		p.skipBlanks()
		if c, ok := p.peek(); !ok || c != '=' {
			return entries, fmt.Errorf("line %d: want '=' after key %s", start, key)
		}
		p.pos++
		p.skipBlanks()
		val, err := p.value(key)
		if err != nil {
			return entries, fmt.Errorf("line %d: %w", start, err)
		}
		if prev, dup := seen[key]; dup {
			clear(val)
			return entries, fmt.Errorf("line %d: key %s already assigned on line %d", start, key, prev)
		}
		seen[key] = start
		entries = append(entries, DotenvEntry{Key: key, Value: NewValue(val), Line: start})
	}
	return entries, nil
}

// skipExport skips "export" followed by blanks and a key.
func (p *dotenvParser) skipExport() {
	rest := p.data[p.pos:]
	if !bytes.HasPrefix(rest, []byte("export")) || len(rest) < 7 || !isBlank(rest[6]) {
		return
	}
	i := 7
	for i < len(rest) && isBlank(rest[i]) {
		i++
	}
	if i < len(rest) && isKeyStart(rest[i]) {
		p.pos += i
	}
}

func (p *dotenvParser) key() string {
	start := p.pos
	if c, ok := p.peek(); !ok || !isKeyStart(c) {
		return ""
	}
	for p.pos < len(p.data) && isKeyChar(p.data[p.pos]) {
		p.pos++
	}
	if p.pos-start > MaxNameLen {
		return ""
	}
	return string(p.data[start:p.pos])
}

// value parses the value after '=' and the rest of its (last) line.
func (p *dotenvParser) value(key string) ([]byte, error) {
	c, _ := p.peek()
	switch c {
	case '\'':
		p.pos++
		end := bytes.IndexByte(p.data[p.pos:], '\'')
		if end < 0 {
			return nil, fmt.Errorf("value of %s: unterminated single quote", key)
		}
		raw := p.data[p.pos : p.pos+end]
		p.line += bytes.Count(raw, []byte{'\n'})
		p.pos += end + 1
		val := bytes.Clone(raw)
		if err := p.afterQuote(key); err != nil {
			clear(val)
			return nil, err
		}
		return val, nil
	case '"':
		p.pos++
		val, err := p.doubleQuoted(key)
		if err != nil {
			return nil, err
		}
		if err := p.afterQuote(key); err != nil {
			clear(val)
			return nil, err
		}
		return val, nil
	}
	// Unquoted: to the end of the line, before a blank-preceded '#'.
	start := p.pos
	end := start
	for end < len(p.data) && p.data[end] != '\n' {
		if p.data[end] == '#' && end > 0 && isBlank(p.data[end-1]) {
			break
		}
		end++
	}
	raw := p.data[start:end]
	for len(raw) > 0 && (isBlank(raw[len(raw)-1]) || raw[len(raw)-1] == '\r') {
		raw = raw[:len(raw)-1]
	}
	p.pos = end
	p.skipToEOL()
	return bytes.Clone(raw), nil
}

func (p *dotenvParser) doubleQuoted(key string) ([]byte, error) {
	// Size the buffer to the closing quote's distance so it never grows
	// (growing would leave a copy behind).
	n := 0
	for i := p.pos; i < len(p.data); i++ {
		if p.data[i] == '"' {
			break
		}
		if p.data[i] == '\\' && i+1 < len(p.data) && bytes.IndexByte([]byte(`nrt"\\$`), p.data[i+1]) >= 0 {
			i++ // a known escape yields one byte
		}
		n++
	}
	val := make([]byte, 0, n+1)
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch c {
		case '"':
			p.pos++
			return val, nil
		case '\n':
			p.line++
		case '\\':
			if p.pos+1 < len(p.data) {
				next := p.data[p.pos+1]
				var out byte
				switch next {
				case 'n':
					out = '\n'
				case 'r':
					out = '\r'
				case 't':
					out = '\t'
				case '"', '\\', '$':
					out = next
				}
				if out != 0 {
					val = append(val, out)
					p.pos += 2
					continue
				}
			}
		}
		val = append(val, c)
		p.pos++
	}
	clear(val)
	return nil, fmt.Errorf("value of %s: unterminated double quote", key)
}

// afterQuote accepts blanks and an optional comment up to the end of line.
func (p *dotenvParser) afterQuote(key string) error {
	p.skipBlanks()
	if c, ok := p.peek(); ok && c == '#' {
		p.skipToEOL()
		return nil
	}
	if !p.atEOL() {
		return fmt.Errorf("value of %s: unexpected text after the closing quote", key)
	}
	p.skipToEOL()
	return nil
}
