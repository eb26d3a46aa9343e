package stack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strings"
)

// maxPeek bounds what is held of a flow's first bytes while its TLS
// server name or HTTP Host is looked for (a ClientHello is one record of
// at most 16 KiB; request headers beyond it are not looked into).
const maxPeek = 16<<10 + 5

// errNoName says the first bytes carry no name to check (another
// protocol, or TLS without a server name): the flow goes on.
var errNoName = errors.New("no name in the first bytes")

// errNeedMore says the name may come with more bytes.
var errNeedMore = errors.New("need more bytes")

// httpMethods start an HTTP/1 request.
var httpMethods = []string{"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "}

// nameIn finds the host name b's first bytes name: a TLS ClientHello's
// server name or an HTTP/1 request's Host header (without its port).
func nameIn(b []byte) (string, error) {
	if len(b) == 0 {
		return "", errNeedMore
	}
	if b[0] == 0x16 { // a TLS handshake record
		return serverName(b)
	}
	for _, m := range httpMethods {
		if len(b) < len(m) {
			if strings.HasPrefix(m, string(b)) {
				return "", errNeedMore
			}
			continue
		}
		if string(b[:len(m)]) == m {
			return httpHost(b)
		}
	}
	return "", errNoName
}

// httpHost is the Host header of the request head in b.
func httpHost(b []byte) (string, error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return "", errNeedMore
	}
	for _, line := range strings.Split(string(b[:end]), "\r\n")[1:] {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), "host") {
			host := strings.TrimSpace(v)
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			return host, nil
		}
	}
	return "", errNoName
}

// serverName is the server_name extension of the ClientHello in the TLS
// record at the start of b.
func serverName(b []byte) (string, error) {
	if len(b) < 5 {
		return "", errNeedMore
	}
	n := int(binary.BigEndian.Uint16(b[3:5]))
	if len(b) < 5+n {
		return "", errNeedMore
	}
	r := reader(b[5 : 5+n])
	if t, ok := r.u8(); !ok || t != 1 { // ClientHello
		return "", errors.New("not a TLS ClientHello")
	}
	body, ok := r.bytes(3)
	if !ok {
		return "", errors.New("a ClientHello that spans records")
	}
	r = reader(body)
	if !r.skip(2+32) || !r.skipVec(1) || !r.skipVec(2) || !r.skipVec(1) {
		return "", errors.New("a malformed ClientHello")
	}
	if len(r) == 0 {
		return "", errNoName // no extensions
	}
	exts, ok := r.bytes(2)
	if !ok {
		return "", errors.New("a malformed ClientHello")
	}
	r = reader(exts)
	for len(r) > 0 {
		typ, ok1 := r.u16()
		data, ok2 := r.bytes(2)
		if !ok1 || !ok2 {
			return "", errors.New("a malformed ClientHello")
		}
		if typ != 0 { // server_name
			continue
		}
		list := reader(data)
		names, ok := list.bytes(2)
		if !ok {
			return "", errors.New("a malformed server_name")
		}
		list = reader(names)
		for len(list) > 0 {
			kind, ok1 := list.u8()
			name, ok2 := list.bytes(2)
			if !ok1 || !ok2 {
				return "", errors.New("a malformed server_name")
			}
			if kind == 0 { // host_name
				return string(name), nil
			}
		}
	}
	return "", errNoName
}

// reader reads a TLS structure.
type reader []byte

func (r *reader) u8() (byte, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := (*r)[0]
	*r = (*r)[1:]
	return v, true
}

func (r *reader) u16() (uint16, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(*r)
	*r = (*r)[2:]
	return v, true
}

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

// bytes reads a vector with a size-byte length.
func (r *reader) bytes(size int) ([]byte, bool) {
	if len(*r) < size {
		return nil, false
	}
	var n int
	for _, c := range (*r)[:size] {
		n = n<<8 | int(c)
	}
	*r = (*r)[size:]
	if len(*r) < n {
		return nil, false
	}
	v := (*r)[:n]
	*r = (*r)[n:]
	return v, true
}

func (r *reader) skipVec(size int) bool {
	_, ok := r.bytes(size)
	return ok
}
