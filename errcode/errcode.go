// Package errcode carries sentinel errors across process boundaries. An
// error that crosses a socket (the supervisor's replies, the guest agent's,
// the supervisor's readiness message) travels as its message plus the codes
// of the sentinel errors it wraps; the receiver rebuilds an error with the
// same message that errors.Is still matches against those sentinels, so a
// caller's errors.Is and the CLI's exit codes survive every hop.
//
// Packages register their own sentinels under stable codes (in an init
// function, as secrets does); the codes are part of the wire protocols and
// never change meaning.
package errcode

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
)

// Code names one sentinel error on the wire ("busy", "secret_not_found").
type Code string

var (
	mu    sync.RWMutex
	table []entry
	byKey = map[Code]error{}
)

type entry struct {
	code Code
	err  error
}

// Register makes code stand for sentinel. It panics when the code is taken
// (a programming error, found by any test).
func Register(code Code, sentinel error) {
	mu.Lock()
	defer mu.Unlock()
	if code == "" || sentinel == nil {
		panic("errcode: Register with an empty code or nil error")
	}
	if _, dup := byKey[code]; dup {
		panic(fmt.Sprintf("errcode: code %q registered twice", code))
	}
	byKey[code] = sentinel
	table = append(table, entry{code, sentinel})
}

// The standard library's sentinels that cross the guest channel.
func init() {
	Register("not_exist", fs.ErrNotExist)
	Register("exist", fs.ErrExist)
	Register("permission", fs.ErrPermission)
}

// Codes returns the codes of every registered sentinel that err matches
// (errors.Is), in registration order; nil for none.
func Codes(err error) []Code {
	if err == nil {
		return nil
	}
	mu.RLock()
	defer mu.RUnlock()
	var out []Code
	for _, e := range table {
		if errors.Is(err, e.err) {
			out = append(out, e.code)
		}
	}
	return out
}

// New rebuilds an error received as msg and codes: its message is msg, and
// errors.Is matches it against the sentinel of each code this process
// knows (codes it does not know, from a newer peer, are ignored). With no
// known code it is a plain error.
func New(msg string, codes []Code) error {
	mu.RLock()
	var errs []error
	for _, c := range codes {
		if e, ok := byKey[c]; ok {
			errs = append(errs, e)
		}
	}
	mu.RUnlock()
	if len(errs) == 0 {
		return errors.New(msg)
	}
	return &coded{msg: msg, errs: errs}
}

// coded is an error rebuilt on the receiving side of a hop.
type coded struct {
	msg  string
	errs []error
}

func (e *coded) Error() string   { return e.msg }
func (e *coded) Unwrap() []error { return e.errs }

// With is an error whose message is msg and that errors.Is matches against
// sentinel: for a message worded for people that must still be tested for
// by programs.
func With(sentinel error, msg string) error {
	return &coded{msg: msg, errs: []error{sentinel}}
}
