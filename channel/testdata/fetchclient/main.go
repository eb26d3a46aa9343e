// Command fetchclient is a workload for the VM tests: it fetches one
// on-demand secret from the agent's socket and prints its SHA-256, so the
// value itself never leaves the guest.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: fetchclient NAME")
		os.Exit(2)
	}
	c, err := net.Dial("unix", os.Getenv("MICROAGENT_SECRETS_SOCK"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(c, "GET %s\n", os.Args[1])
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var r struct {
		OK    bool   `json:"ok"`
		Value string `json:"value"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(line, &r); err != nil || !r.OK {
		fmt.Fprintln(os.Stderr, "fetch failed:", r.Error, err)
		os.Exit(1)
	}
	v, _ := base64.StdEncoding.DecodeString(r.Value)
	fmt.Printf("%x\n", sha256.Sum256(v))
}
