package mcpserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// maxLine bounds one message on stdio (the SDK's own bound): file_write's
// 8 MiB, base64-encoded, fits.
const maxLine = mcp.DefaultMaxLineLength

// ServeStdio serves one client over newline-delimited JSON on in and out
// (the process's stdin and stdout for "serve mcp") until it disconnects or
// ctx ends. A line that is not a JSON-RPC message is answered with a
// JSON-RPC error and dropped: the SDK's transport would end the session
// on it, and a client's one bad write must not take its workspaces' server
// down.
func (s *Server) ServeStdio(ctx context.Context, in io.Reader, out io.Writer) error {
	w := &lockedWriter{w: out}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(filterLines(in, pw, w)) }()
	defer pr.Close()
	err := s.srv.Run(ctx, &mcp.IOTransport{Reader: pr, Writer: w, MaxLineLength: maxLine + 1})
	if ctx.Err() != nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
		return nil
	}
	return err
}

// lockedWriter serialises the SDK's messages (one Write each) and the
// filter's error replies on one stream.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (l *lockedWriter) Close() error { return nil }

// filterLines copies the JSON-RPC messages of in to next, line by line,
// and answers every other line on reply. It returns when in ends.
func filterLines(in io.Reader, next io.Writer, reply io.Writer) error {
	r := bufio.NewReaderSize(in, 64<<10)
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) <= maxLine {
			line = append(line, chunk...)
		} else if line != nil || len(chunk) > 0 {
			line = append(line[:0], '!') // too long: kept only as "malformed"
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if t := bytes.TrimSpace(line); len(t) > 0 {
			if id, msg, ok := checkMessage(t); ok {
				if _, werr := next.Write(append(t, '\n')); werr != nil {
					return werr
				}
			} else {
				b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{"code": codeOf(msg), "message": msg}})
				if _, werr := reply.Write(append(b, '\n')); werr != nil {
					return werr
				}
			}
		}
		line = line[:0]
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

const (
	msgParse   = "parse error: each line must be one JSON-RPC 2.0 message (JSON, at most 16 MiB)"
	msgInvalid = "invalid request: not a JSON-RPC 2.0 message"
)

func codeOf(msg string) int64 {
	if msg == msgParse {
		return jsonrpc.CodeParseError
	}
	return jsonrpc.CodeInvalidRequest
}

// checkMessage reports whether a line is a JSON-RPC message (or a batch of
// them) the transport will accept; if not, the id to answer (when one can
// be read) and why.
func checkMessage(b []byte) (id any, msg string, ok bool) {
	if !json.Valid(b) {
		return nil, msgParse, false
	}
	var batch []json.RawMessage
	if b[0] == '[' {
		if json.Unmarshal(b, &batch) != nil || len(batch) == 0 {
			return nil, msgInvalid, false
		}
	} else {
		batch = []json.RawMessage{b}
	}
	for _, m := range batch {
		if _, err := jsonrpc.DecodeMessage(m); err != nil {
			var probe struct {
				ID any `json:"id"`
			}
			json.Unmarshal(m, &probe)
			switch probe.ID.(type) {
			case string, float64:
				id = probe.ID
			}
			return id, fmt.Sprintf("%s (%v)", msgInvalid, err), false
		}
	}
	return nil, "", true
}
