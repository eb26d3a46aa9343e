package channel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/microagent-dev/microagent/tarcopy"
)

// Copy operations. Both move one tar archive (see package tarcopy) over
// their stream, in data frames:
//
//   - OpCopyIn: the host sends FrameStdin frames with the archive, then
//     FrameStdinEOF; the guest extracts it at CopyRequest.Path and answers
//     with one FrameReply (Data: tarcopy.Stats). The guest may answer with
//     an error before the archive is complete; the host then stops.
//   - OpCopyOut: the guest sends FrameStdout frames with the archive of
//     CopyRequest.Path, then one FrameReply (an error, with no data
//     frames before it, when the path cannot be read).
//
// A stream that ends without the end-of-data frame or the reply is a
// failed copy.
const (
	OpCopyIn  = "copyin"
	OpCopyOut = "copyout"
)

// CopyRequest is the body of OpCopyIn and OpCopyOut.
type CopyRequest struct {
	// Path is the guest path (absolute): the destination of a copy-in
	// (docker cp semantics, see tarcopy.Extract), the source of a
	// copy-out (a path ending in "/." means a directory's contents).
	Path string `json:"path"`
	// Into extracts the archive as it is into the existing directory
	// Path (a tar stream from the user) instead.
	Into bool `json:"into,omitempty"`
	// MkdirParents creates Path's missing parent directories.
	MkdirParents bool `json:"mkdirParents,omitempty"`
	// Owner, when set, is a user spec of the image ("name", "uid",
	// "uid:gid", "name:group"; as exec's User) that owns every extracted
	// entry instead of the archive's numeric owner.
	Owner string `json:"owner,omitempty"`
	// Sync flushes the destination's file system before the guest
	// answers, so the copy survives a VM that is killed afterwards.
	Sync bool `json:"sync,omitempty"`
}

// replyGrace bounds the wait for the guest's reply once sending failed.
const replyGrace = 5 * time.Second

// copyChunk is the payload size of a data frame: large enough that the
// framing costs nothing, well under MaxFrame and the yamux window.
const copyChunk = 128 << 10

// frameWriter cuts what it is given into frames of one type.
type frameWriter struct {
	w io.Writer
	t FrameType
}

func (f frameWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		c := b[:min(len(b), copyChunk)]
		if err := WriteFrame(f.w, f.t, c); err != nil {
			return n, err
		}
		n += len(c)
		b = b[len(c):]
	}
	return n, nil
}

// NewDataWriter returns a writer that sends what it is given as frames of
// type t on w (the guest's side of OpCopyOut uses FrameStdout).
func NewDataWriter(w io.Writer, t FrameType) io.Writer { return frameWriter{w, t} }

// dataReader reads the payload of FrameStdin frames up to FrameStdinEOF.
type dataReader struct {
	r    io.Reader
	buf  []byte
	rest []byte
	eof  bool
}

// NewDataReader returns a reader of the archive a copy-in stream carries
// (the guest's side of OpCopyIn): the payload of FrameStdin frames, ending
// at FrameStdinEOF. A stream that ends before that reads as
// io.ErrUnexpectedEOF.
func NewDataReader(r io.Reader) io.Reader { return &dataReader{r: r} }

func (d *dataReader) Read(p []byte) (int, error) {
	for len(d.rest) == 0 {
		if d.eof {
			return 0, io.EOF
		}
		t, b, err := ReadFrame(d.r, d.buf)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("copy: the sender went away: %w", err)
		}
		d.buf = b[:cap(b)]
		switch t {
		case FrameStdin:
			d.rest = b
		case FrameStdinEOF:
			d.eof = true
		default:
			return 0, fmt.Errorf("copy: unexpected frame type %d", t)
		}
	}
	n := copy(p, d.rest)
	d.rest = d.rest[n:]
	return n, nil
}

// SendArchive speaks the host's side of OpCopyIn on a stream whose header
// has been sent: it sends archive and returns the guest's account. When
// the guest refuses early, its error is returned at once (the caller then
// closes the stream, which ends the sending). An error reading archive
// closes nothing: the caller closes the stream, and the guest, seeing it
// end without the end-of-data frame, gives the copy up.
func SendArchive(rw io.ReadWriter, archive io.Reader) (tarcopy.Stats, error) {
	sendErr := make(chan error, 1)
	go func() {
		buf := make([]byte, copyChunk)
		for {
			n, err := archive.Read(buf)
			if n > 0 {
				if werr := WriteFrame(rw, FrameStdin, buf[:n]); werr != nil {
					sendErr <- errStreamLost(werr)
					return
				}
			}
			if err == io.EOF {
				if werr := WriteFrame(rw, FrameStdinEOF, nil); werr != nil {
					sendErr <- errStreamLost(werr)
					return
				}
				sendErr <- nil
				return
			}
			if err != nil {
				sendErr <- err
				return
			}
		}
	}()
	type result struct {
		st  tarcopy.Stats
		err error
	}
	replyc := make(chan result, 1)
	go func() {
		st, err := readCopyReply(rw)
		replyc <- result{st, err}
	}()
	for {
		select {
		case err := <-sendErr:
			if err == nil {
				sendErr = nil // all sent: wait for the reply
				continue
			}
			var lost streamLost
			if !errors.As(err, &lost) {
				return tarcopy.Stats{}, err // the archive failed on our side
			}
			// The stream broke under us: usually because the guest
			// refused and closed it, and its reply, on its way, says why.
			select {
			case r := <-replyc:
				if r.err != nil && IsGuestCopyError(r.err) {
					return r.st, r.err
				}
			case <-time.After(replyGrace):
			}
			return tarcopy.Stats{}, err
		case r := <-replyc:
			return r.st, r.err
		}
	}
}

type streamLost struct{ err error }

func (e streamLost) Error() string {
	return "copy: the connection to the guest was lost: " + e.err.Error()
}
func (e streamLost) Unwrap() error { return e.err }

func errStreamLost(err error) error { return streamLost{err} }

// readCopyReply reads the reply that ends a copy-in.
func readCopyReply(r io.Reader) (tarcopy.Stats, error) {
	var rep Reply
	if err := ReadJSON(r, FrameReply, &rep); err != nil {
		return tarcopy.Stats{}, errStreamLost(err)
	}
	return copyResult(rep)
}

func copyResult(rep Reply) (tarcopy.Stats, error) {
	var st tarcopy.Stats
	if rep.Error != "" {
		return st, &GuestCopyError{Msg: rep.Error, err: rep.Err()}
	}
	if len(rep.Data) > 0 {
		if err := json.Unmarshal(rep.Data, &st); err != nil {
			return st, fmt.Errorf("copy: bad reply from the guest: %w", err)
		}
	}
	return st, nil
}

// GuestCopyError is a copy the guest refused or failed, in its words; it
// unwraps to the sentinels the guest named (fs.ErrNotExist, say).
type GuestCopyError struct {
	Msg string
	err error
}

// Error returns the guest's message.
func (e *GuestCopyError) Error() string { return "guest: " + e.Msg }

// Unwrap is the guest's error, as matched by errors.Is.
func (e *GuestCopyError) Unwrap() error { return e.err }

// ReceiveArchive speaks the host's side of OpCopyOut on a stream whose
// header has been sent: it writes the archive to w and returns the
// guest's account once the guest has finished.
func ReceiveArchive(r io.Reader, w io.Writer) (tarcopy.Stats, error) {
	buf := make([]byte, 0, copyChunk)
	for {
		t, b, err := ReadFrame(r, buf)
		if err != nil {
			return tarcopy.Stats{}, errStreamLost(err)
		}
		buf = b[:0]
		switch t {
		case FrameStdout:
			if _, err := w.Write(b); err != nil {
				return tarcopy.Stats{}, err
			}
		case FrameReply:
			var rep Reply
			if err := jsonUnmarshal(b, &rep); err != nil {
				return tarcopy.Stats{}, err
			}
			return copyResult(rep)
		default:
			return tarcopy.Stats{}, fmt.Errorf("copy: unexpected frame type %d", t)
		}
	}
}

// CopyIn extracts the archive in the guest (see OpCopyIn).
func (c *Client) CopyIn(ctx context.Context, req CopyRequest, archive io.Reader) (tarcopy.Stats, error) {
	st, err := c.OpenRaw(ctx, Header{Op: OpCopyIn, Copy: &req})
	if err != nil {
		return tarcopy.Stats{}, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	s, err := SendArchive(st, archive)
	if err != nil && ctx.Err() != nil {
		return s, ctx.Err()
	}
	return s, err
}

// CopyOut writes the guest's archive of req.Path to w (see OpCopyOut).
func (c *Client) CopyOut(ctx context.Context, req CopyRequest, w io.Writer) (tarcopy.Stats, error) {
	st, err := c.OpenRaw(ctx, Header{Op: OpCopyOut, Copy: &req})
	if err != nil {
		return tarcopy.Stats{}, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	s, err := ReceiveArchive(st, w)
	if err != nil && ctx.Err() != nil {
		return s, ctx.Err()
	}
	return s, err
}

// IsGuestCopyError reports whether err is the guest's refusal or failure
// (as opposed to a lost connection).
func IsGuestCopyError(err error) bool {
	var g *GuestCopyError
	return errors.As(err, &g)
}
