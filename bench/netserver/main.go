// Command netserver is the guest side of the network benchmark in a
// microagent VM. Without arguments it serves netpeer transfers on
// netpeer.Port until killed. As "netserver client ADDR OP COUNT BYTES" it
// times COUNT transfers of its own to the netpeer server at ADDR (the
// guest dialling out): OP is U (upload, guest to host), D (download, host
// to guest) or C (connection setup: a one-byte download), and it prints
// one duration in nanoseconds per line. As "netserver https URL COUNT
// CAFILE [HEADER]" it GETs URL COUNT times, each on a new connection
// trusting only CAFILE's certificates, with HEADER ("Name: value") when
// given, and prints the duration of each (to the body's last byte) and
// the bytes it read.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/microagent-dev/microagent/bench/netpeer"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "netserver:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		l, err := net.Listen("tcp4", fmt.Sprintf(":%d", netpeer.Port))
		if err != nil {
			return err
		}
		fmt.Println("NETSERVER listening")
		return netpeer.Serve(l)
	}
	if len(args) >= 4 && args[0] == "https" {
		return httpsGets(args[1:])
	}
	if len(args) != 5 || args[0] != "client" {
		return fmt.Errorf("usage: netserver [client ADDR U|D|C COUNT BYTES | https URL COUNT CAFILE [HEADER]]")
	}
	addr, op := args[1], args[2]
	count, err := strconv.Atoi(args[3])
	if err != nil {
		return err
	}
	size, err := strconv.ParseInt(args[4], 10, 64)
	if err != nil {
		return err
	}
	for range count {
		var d time.Duration
		switch op {
		case "U":
			d, err = netpeer.Upload(addr, size)
		case "D":
			d, err = netpeer.Download(addr, size)
		case "C":
			d, err = netpeer.Download(addr, 1)
		default:
			return fmt.Errorf("unknown op %q: U, D or C", op)
		}
		if err != nil {
			return err
		}
		fmt.Println(d.Nanoseconds())
	}
	return nil
}

// httpsGets is the https mode: COUNT GETs of URL, each on a new
// connection (handshake included), timed to the body's last byte.
func httpsGets(args []string) error {
	url := args[0]
	count, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	pem, err := os.ReadFile(args[2])
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", args[2])
	}
	var name, value string
	if len(args) > 3 {
		n, v, ok := strings.Cut(args[3], ":")
		if !ok {
			return fmt.Errorf("header %q: want Name: value", args[3])
		}
		name, value = n, strings.TrimSpace(v)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true}}
	buf := make([]byte, 256<<10)
	for range count {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			return err
		}
		if name != "" {
			req.Header.Set(name, value)
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		n, err := io.CopyBuffer(io.Discard, resp.Body, buf)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		fmt.Println(time.Since(start).Nanoseconds(), n)
	}
	return nil
}
