// Package audit keeps the per-workspace secrets audit log: one JSON line per
// access to a secret (each boot materialization, each rehydration, each
// on-demand fetch, denied and failed ones included), never the value.
//
// The log is append-only and hash-chained: every record carries the SHA-256
// of the previous record and of itself, so a record modified, removed,
// inserted or reordered by someone who did not rebuild the chain fails
// Verify. The chain is not keyed: whoever can write the file can rebuild a
// consistent one, or cut records off the end, and the file alone cannot
// show it. What does is a head (Report.Head) kept where that writer cannot
// reach: VerifyHead checks that the log still leads through it. A record
// is written and fsync'ed before
// the value it describes may leave the host; Gate enforces that, withholding
// the value when the record cannot be written.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/microagent-dev/microagent/errcode"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/secrets"
)

// FileName is the audit log's name inside a workspace's directory.
const FileName = "secrets-audit.log"

// WorkspacesDir is the state sub-directory holding one folder per workspace.
const WorkspacesDir = "workspaces"

// PathFor returns the audit log of workspace ws:
// <state>/workspaces/<ws>/secrets-audit.log.
func PathFor(h home.Home, ws string) string {
	return h.Path(WorkspacesDir, ws, FileName)
}

// TimeLayout is the records' time format: RFC 3339 in UTC with exactly nine
// fractional digits, so lines sort and align.
const TimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Access is how a secret was accessed.
type Access string

// Accesses.
const (
	Boot      Access = "boot"      // materialized into /run/secrets at start
	Rehydrate Access = "rehydrate" // re-materialized after resume, restore or fork
	OnDemand  Access = "on-demand" // fetched by the guest over the secrets socket
	Egress    Access = "egress"    // put in a request to a host by the network (--secret-egress)
)

// Result is the outcome of an access.
type Result string

// Results.
const (
	OK     Result = "ok"     // the value was released to the guest
	Denied Result = "denied" // the backend refused, or the name is not declared on-demand
	Failed Result = "error"  // any other failure (missing, empty, backend down ...)
)

// maxReason bounds the reason kept in a record.
const maxReason = 1024

// Record is one audit log entry.
type Record struct {
	// Time is when the access was recorded (UTC, nanoseconds).
	Time time.Time
	// Name is the secret's name ("(invalid name)" for a malformed
	// on-demand request).
	Name string
	// Access is how the secret was accessed.
	Access Access
	// Result is the outcome.
	Result Result
	// Reason says why a denied or failed access did not succeed.
	Reason string
	// Dest is where an Egress access's value was to go: "METHOD
	// host/path" (the path without its query).
	Dest string
	// Prev is the hex SHA-256 of the previous record (64 zeros for the first).
	Prev string
	// Hash is the hex SHA-256 of this record's line without its hash field.
	Hash string
}

// wire is a record's JSON form; field order is the line's byte order.
type wire struct {
	Time   string `json:"time"`
	Name   string `json:"name"`
	Access Access `json:"access"`
	Result Result `json:"result"`
	Reason string `json:"reason,omitempty"`
	Dest   string `json:"dest,omitempty"`
	Prev   string `json:"prev"`
	Hash   string `json:"hash,omitempty"`
}

func (r Record) wire() wire {
	return wire{Time: r.Time.UTC().Format(TimeLayout), Name: r.Name, Access: r.Access, Result: r.Result, Reason: r.Reason, Dest: r.Dest, Prev: r.Prev, Hash: r.Hash}
}

// MarshalJSON encodes the record as it appears in the log.
func (r Record) MarshalJSON() ([]byte, error) { return json.Marshal(r.wire()) }

// UnmarshalJSON decodes a record as it appears in the log.
func (r *Record) UnmarshalJSON(b []byte) error {
	var w wire
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		return fmt.Errorf("time: %w", err)
	}
	*r = Record{Time: t, Name: w.Name, Access: w.Access, Result: w.Result, Reason: w.Reason, Dest: w.Dest, Prev: w.Prev, Hash: w.Hash}
	return nil
}

// String returns "<time> <name> <access> <result>", the text form, and
// an egress access's destination after it.
func (r Record) String() string {
	s := fmt.Sprintf("%s %s %s %s", r.Time.UTC().Format(TimeLayout), r.Name, r.Access, r.Result)
	if r.Dest != "" {
		s += " " + r.Dest
	}
	return s
}

func (r Record) check() error {
	switch r.Access {
	case Boot, Rehydrate, OnDemand, Egress:
	default:
		return fmt.Errorf("unknown access %q", r.Access)
	}
	switch r.Result {
	case OK, Denied, Failed:
	default:
		return fmt.Errorf("unknown result %q", r.Result)
	}
	if r.Name != invalidName && !secrets.ValidName(r.Name) {
		return errors.New("invalid secret name")
	}
	return nil
}

const invalidName = "(invalid name)"

var zeroHash = strings.Repeat("0", 64)

// hashSuffix is what ends every line: `,"hash":"<64 hex>"}`.
const hashSuffixLen = len(`,"hash":"`) + 64 + len(`"}`)

// encode returns r's line (without newline) chained to prev, and its hash.
func encode(r Record, prev string) (line []byte, hash string, err error) {
	w := r.wire()
	w.Prev, w.Hash = prev, ""
	body, err := json.Marshal(w)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(body)
	hash = hex.EncodeToString(sum[:])
	line = append(body[:len(body)-1:len(body)-1], `,"hash":"`+hash+`"}`...)
	return line, hash, nil
}

// lineHash checks that line ends with a hash field and that the field is
// the SHA-256 of the rest, and returns it.
func lineHash(line []byte) (string, error) {
	n := len(line)
	if n < hashSuffixLen+2 || !bytes.HasPrefix(line[n-hashSuffixLen:], []byte(`,"hash":"`)) || !bytes.HasSuffix(line, []byte(`"}`)) {
		return "", errors.New("no hash field at the end")
	}
	stored := string(line[n-66 : n-2])
	body := append(bytes.Clone(line[:n-hashSuffixLen]), '}')
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != stored {
		return stored, errors.New("hash mismatch: the record was modified")
	}
	return stored, nil
}

// Log is an open audit log. Its methods are safe for concurrent use, and
// appends from several processes are serialized with a file lock.
type Log struct {
	mu   sync.Mutex
	f    *os.File
	path string
}

// Open opens (creating, 0600, and its directory, 0700) the audit log at
// path for appending. A symbolic link at path is refused.
func Open(path string) (*Log, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("secrets audit log %s: %w", path, err)
	}
	_, statErr := os.Lstat(path)
	created := errors.Is(statErr, os.ErrNotExist)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("secrets audit log %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("secrets audit log %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("secrets audit log %s: not a regular file", path)
	}
	if fi.Mode().Perm() != 0o600 {
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return nil, fmt.Errorf("secrets audit log %s: %w", path, err)
		}
	}
	if created {
		// Make the new file's directory entry durable too.
		if d, err := os.Open(dir); err == nil {
			_ = d.Sync()
			d.Close()
		}
	}
	return &Log{f: f, path: path}, nil
}

// Path returns the log's file path.
func (l *Log) Path() string { return l.path }

// Close closes the log.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Append sets rec's Time (when zero), Prev and Hash, writes it as one line
// and fsyncs the file before returning. Any failure is returned: the caller
// must then withhold the value (see Gate).
func (l *Log) Append(rec Record) error {
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	if len(rec.Reason) > maxReason {
		rec.Reason = rec.Reason[:maxReason] + "..."
	}
	if len(rec.Dest) > maxReason {
		rec.Dest = rec.Dest[:maxReason] + "..."
	}
	if err := rec.check(); err != nil {
		return fmt.Errorf("secrets audit log %s: record for %q: %w", l.path, rec.Name, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return fmt.Errorf("secrets audit log %s: closed", l.path)
	}
	fd := int(l.f.Fd())
	if err := syscall.Flock(fd, syscall.LOCK_EX); err != nil {
		return fmt.Errorf("secrets audit log %s: lock: %w", l.path, err)
	}
	defer syscall.Flock(fd, syscall.LOCK_UN)
	prev, err := lastHash(l.f)
	if err != nil {
		return fmt.Errorf("secrets audit log %s: %w", l.path, err)
	}
	line, _, err := encode(rec, prev)
	if err != nil {
		return fmt.Errorf("secrets audit log %s: %w", l.path, err)
	}
	// One write of the whole line: with O_APPEND it lands at the end in
	// one piece.
	if _, err := l.f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("secrets audit log %s: write: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("secrets audit log %s: fsync: %w", l.path, err)
	}
	return nil
}

// maxLine bounds one record's line; records are far smaller.
const maxLine = 64 << 10

// lastHash returns the hash field of the file's last record, or zeroHash
// for an empty file. A last line without its newline (a crash mid-write) or
// without a hash is an error: appending after it would hide the damage.
func lastHash(f *os.File) (string, error) {
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	size := fi.Size()
	if size == 0 {
		return zeroHash, nil
	}
	n := min(size, maxLine)
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, size-n); err != nil && err != io.EOF {
		return "", fmt.Errorf("read last record: %w", err)
	}
	if buf[n-1] != '\n' {
		return "", errors.New("the last record is incomplete (crash during a write?): run \"microagent secret audit <workspace> --verify\" and move the log aside")
	}
	line := buf[:n-1]
	if i := bytes.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	} else if n < size {
		return "", errors.New("the last record is too long")
	}
	h := len(line)
	if h < hashSuffixLen || !bytes.HasPrefix(line[h-hashSuffixLen:], []byte(`,"hash":"`)) {
		return "", errors.New("the last record has no hash: run \"microagent secret audit <workspace> --verify\"")
	}
	return string(line[h-66 : h-2]), nil
}

// ErrWithheld marks a value withheld because its audit record could not be
// written.
var ErrWithheld = errors.New("secret withheld: its audit record could not be written")

func init() { errcode.Register("secret_withheld", ErrWithheld) }

// ResultOf maps a resolution error to a Result.
func ResultOf(err error) Result {
	switch {
	case err == nil:
		return OK
	case secrets.IsDenied(err):
		return Denied
	default:
		return Failed
	}
}

// Gate records one access to the secret name and decides whether its value
// may leave the host. resolveErr is the resolution's outcome and v the
// value (nil when resolution failed).
//
// When resolveErr is non-nil the access is recorded as denied or error and
// resolveErr is returned. When it is nil the access is recorded as ok and
// Gate returns nil only once the record is on disk; if it cannot be
// written, v is zeroed and the error wraps ErrWithheld (fail closed). A nil
// Log (auditing off) records nothing and passes resolveErr through.
func (l *Log) Gate(name string, access Access, v *secrets.Value, resolveErr error) error {
	if l == nil {
		if resolveErr != nil {
			v.Zero()
		}
		return resolveErr
	}
	if !secrets.ValidName(name) {
		name = invalidName
	}
	rec := Record{Name: name, Access: access, Result: ResultOf(resolveErr)}
	if resolveErr != nil {
		rec.Reason = secrets.Reason(resolveErr)
	}
	aerr := l.Append(rec)
	if resolveErr != nil {
		v.Zero()
		if aerr != nil {
			return fmt.Errorf("%w (and its audit record could not be written: %v)", resolveErr, aerr)
		}
		return resolveErr
	}
	if aerr != nil {
		v.Zero()
		return fmt.Errorf("secret %s: %w: %w", name, ErrWithheld, aerr)
	}
	return nil
}

// GateBundle records a boot or rehydrate materialization after
// secrets.ResolveAll: the failing secret when resolveErr is non-nil, else
// every secret in b, before any value leaves the host. On any failure the
// whole bundle is zeroed and an error returned.
func (l *Log) GateBundle(access Access, b *secrets.Bundle, resolveErr error) error {
	if resolveErr != nil {
		b.Zero()
		var se *secrets.Error
		if l != nil && errors.As(resolveErr, &se) && se.Name != "" {
			return l.Gate(se.Name, access, nil, resolveErr)
		}
		return resolveErr
	}
	if b == nil {
		return nil
	}
	for _, s := range b.Secrets {
		if err := l.Gate(s.Name, access, s.Value, nil); err != nil {
			b.Zero()
			return err
		}
	}
	return nil
}
