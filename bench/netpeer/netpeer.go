// Package netpeer is the TCP transfer the network benchmark times: one
// server (in the guest, or on the host for the loopback floor) and a
// client on the host, so every path moves the same bytes with the same
// code.
//
// A connection starts with a 9-byte request: 'U' (upload: the client sends
// n bytes, the server answers one byte once it has read them all) or 'D'
// (download: the server sends n bytes and closes), then n as a big-endian
// uint64.
package netpeer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Port is the TCP port the server listens on in the guest.
const Port = 5001

// bufSize is the size of every read and write.
const bufSize = 256 << 10

// Serve answers requests on l until it fails (it is closed).
func Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go serve(c)
	}
}

func serve(c net.Conn) {
	defer c.Close()
	var req [9]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return
	}
	n := int64(binary.BigEndian.Uint64(req[1:]))
	buf := make([]byte, bufSize)
	switch req[0] {
	case 'U':
		if got, err := io.CopyBuffer(io.Discard, io.LimitReader(c, n), buf); err != nil || got != n {
			return
		}
		c.Write([]byte{1})
	case 'D':
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := c.Write(buf[:k]); err != nil {
				return
			}
			n -= k
		}
	}
}

// dial connects to the server at addr, bounds the whole transfer, and sends
// the request (op and size).
func dial(addr string, op byte, n int64) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	if err := request(c, op, n); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Upload sends n bytes to the server at addr and returns the time from
// dialling to the server's acknowledgement that it has read them all.
func Upload(addr string, n int64) (time.Duration, error) {
	start := time.Now()
	c, err := dial(addr, 'U', n)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, bufSize)
	for left := n; left > 0; {
		k := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:k]); err != nil {
			return 0, fmt.Errorf("upload to %s: %w", addr, err)
		}
		left -= k
	}
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return 0, fmt.Errorf("upload to %s: no acknowledgement: %w", addr, err)
	}
	return time.Since(start), nil
}

// Download has the server at addr send n bytes and returns the time from
// dialling to the last byte.
func Download(addr string, n int64) (time.Duration, error) {
	start := time.Now()
	c, err := dial(addr, 'D', n)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	got, err := io.CopyBuffer(io.Discard, c, make([]byte, bufSize))
	if err != nil {
		return 0, fmt.Errorf("download from %s: %w", addr, err)
	}
	if got != n {
		return 0, fmt.Errorf("download from %s: got %d bytes, want %d", addr, got, n)
	}
	return time.Since(start), nil
}

func request(c net.Conn, op byte, n int64) error {
	if n < 0 {
		return errors.New("negative size")
	}
	var req [9]byte
	req[0] = op
	binary.BigEndian.PutUint64(req[1:], uint64(n))
	_, err := c.Write(req[:])
	return err
}

// Ready polls addr until a server answers a one-byte download (the NAT
// accepts connections before the guest's server listens, then resets
// them), bounded by limit.
func Ready(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		_, err := Download(addr, 1)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no transfer server at %s within %s: %w", addr, limit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
