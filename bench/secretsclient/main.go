// Command secretsclient is the benchmark's guest-side client of the
// on-demand secrets socket. It fetches one secret -n times, each over a new
// connection ("GET <name>\n", one JSON reply line), as a workload would,
// and prints the latency of each counted fetch, measured inside the guest,
// as one line: "FETCH_NS n1 n2 ...".
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// sockEnv names the socket's path (guest.SecretsSockEnv; not imported, so
// the client stays a small program with no agent code in it).
const sockEnv = "MICROAGENT_SECRETS_SOCK"

func main() {
	name := flag.String("name", "X", "secret to fetch")
	n := flag.Int("n", 500, "counted fetches")
	warm := flag.Int("warm", 10, "uncounted fetches first")
	size := flag.Int("len", -1, "expected value length in bytes (-1: any)")
	flag.Parse()
	sock := os.Getenv(sockEnv)
	if sock == "" {
		fmt.Fprintf(os.Stderr, "secretsclient: %s is not set: no on-demand secret was declared\n", sockEnv)
		os.Exit(1)
	}
	out := make([]string, 0, *n)
	for i := 0; i < *warm+*n; i++ {
		t := time.Now()
		v, err := fetch(sock, *name)
		d := time.Since(t)
		if err != nil {
			fmt.Fprintf(os.Stderr, "secretsclient: fetch %d of %s: %v\n", i, *name, err)
			os.Exit(1)
		}
		if *size >= 0 && len(v) != *size {
			fmt.Fprintf(os.Stderr, "secretsclient: fetch %d of %s: %d bytes, want %d\n", i, *name, len(v), *size)
			os.Exit(1)
		}
		if i >= *warm {
			out = append(out, strconv.FormatInt(d.Nanoseconds(), 10))
		}
	}
	fmt.Println("FETCH_NS " + strings.Join(out, " "))
}

// fetch asks the socket at sock for name and returns the decoded value.
func fetch(sock, name string) ([]byte, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("GET " + name + "\n")); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("read the reply: %w", err)
	}
	var r struct {
		OK    bool   `json:"ok"`
		Value string `json:"value"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, fmt.Errorf("reply is not JSON: %w", err)
	}
	if !r.OK {
		return nil, errors.New("denied: " + r.Error)
	}
	return base64.StdEncoding.DecodeString(r.Value)
}
