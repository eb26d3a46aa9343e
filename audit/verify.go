package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// scanLines calls fn for every line of the log at path with its 1-based
// number; complete reports whether the line ended with a newline.
func scanLines(path string, fn func(n int, line []byte, complete bool) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("secrets audit log %s: %w", path, err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 4096)
	for n := 1; ; n++ {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Far longer than any record: read the rest of it and report it
			// as malformed.
			long := bytes.Clone(line)
			for errors.Is(err, bufio.ErrBufferFull) && len(long) <= maxLine {
				line, err = r.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if len(line) == 0 && err == io.EOF {
			return nil
		}
		if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("secrets audit log %s: %w", path, err)
		}
		complete := bytes.HasSuffix(line, []byte("\n"))
		if ferr := fn(n, bytes.TrimSuffix(line, []byte("\n")), complete); ferr != nil {
			return ferr
		}
		if err == io.EOF {
			return nil
		}
	}
}

func parseRecord(line []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return Record{}, fmt.Errorf("malformed record: %v", err)
	}
	if err := r.check(); err != nil {
		return Record{}, fmt.Errorf("malformed record: %v", err)
	}
	return r, nil
}

// Read returns the log's records in order. A malformed line stops the read:
// the records before it are returned with an error naming the line.
func Read(path string) ([]Record, error) {
	var recs []Record
	err := scanLines(path, func(n int, line []byte, complete bool) error {
		if !complete {
			return fmt.Errorf("secrets audit log %s: record %d is incomplete (no newline)", path, n)
		}
		r, err := parseRecord(line)
		if err != nil {
			return fmt.Errorf("secrets audit log %s: record %d: %v", path, n, err)
		}
		recs = append(recs, r)
		return nil
	})
	return recs, err
}

// Report is the outcome of Verify.
type Report struct {
	// Records is the number of records read (up to the first bad one).
	Records int `json:"records"`
	// FirstBad is the 1-based number of the first record that fails the
	// check, 0 when the whole chain is intact.
	FirstBad int `json:"firstBad,omitempty"`
	// Reason says what is wrong with record FirstBad.
	Reason string `json:"reason,omitempty"`
	// Head is the hash of the last intact record (64 zeros for an empty
	// log): the value to keep outside the log (see VerifyHead).
	Head string `json:"head"`
	// HeadAt is the 1-based number of the record whose hash is the head
	// VerifyHead was given (0 for the empty chain's head, or when none).
	HeadAt int `json:"headAt,omitempty"`
	// HeadMissing: VerifyHead's head is not in the chain (Reason says so).
	HeadMissing bool `json:"headMissing,omitempty"`
}

// OK reports whether the chain is intact (and, for VerifyHead, leads
// through the head).
func (r Report) OK() bool { return r.FirstBad == 0 && !r.HeadMissing }

// Verify checks the hash chain of the log at path and reports the first
// broken record: a malformed line, a record whose hash does not match its
// content (modified), or one whose prev does not match the record before it
// (a record removed, inserted or reordered). The error is for failing to
// read the log at all.
func Verify(path string) (Report, error) {
	return verify(path, "")
}

// VerifyHead is Verify that also requires the chain to lead through head,
// a record hash exported earlier (Report.Head, "secret audit --head"):
// the chain is not keyed, so whoever can write the log can rebuild a
// consistent one, but not one through a hash kept where that writer
// cannot reach. Records 1..HeadAt are then exactly those of the export;
// records after it are only as trustworthy as the file.
func VerifyHead(path, head string) (Report, error) {
	if err := CheckHead(head); err != nil {
		return Report{}, err
	}
	return verify(path, head)
}

// CheckHead checks that s has the form of a head: a record hash.
func CheckHead(s string) error {
	ok := len(s) == 64
	for _, c := range s {
		ok = ok && (c >= '0' && c <= '9' || c >= 'a' && c <= 'f')
	}
	if !ok {
		return fmt.Errorf("head %q is not a record hash (64 lower-case hex digits, as \"secret audit --head\" prints)", s)
	}
	return nil
}

func verify(path, head string) (Report, error) {
	rep := Report{Head: zeroHash}
	found := head == "" || head == zeroHash // the empty chain's head: every log leads through it
	prev := zeroHash
	errStop := errors.New("stop")
	err := scanLines(path, func(n int, line []byte, complete bool) error {
		bad := func(format string, args ...any) error {
			rep.FirstBad, rep.Reason = n, fmt.Sprintf(format, args...)
			return errStop
		}
		if !complete {
			return bad("record %d is incomplete (no newline): a write was cut short", n)
		}
		r, err := parseRecord(line)
		if err != nil {
			return bad("record %d: %v", n, err)
		}
		hash, err := lineHash(line)
		if err != nil {
			return bad("record %d: %v", n, err)
		}
		if r.Prev != prev {
			if n == 1 {
				return bad("record 1 does not start the chain: records before it were removed")
			}
			return bad("record %d does not follow record %d: a record was removed, inserted or reordered", n, n-1)
		}
		prev = hash
		rep.Records, rep.Head = n, hash
		if !found && hash == head {
			rep.HeadAt, found = n, true
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return rep, err
	}
	if !found && rep.FirstBad == 0 {
		rep.HeadMissing = true
		rep.Reason = fmt.Sprintf("no record of the chain has hash %s: the log was rewritten or cut short since that head was taken", head)
	}
	return rep, nil
}
