// Command hostile is the attacker of the hostile-guest VM tests, run as
// root in the guest. It prints nothing until its attack is over: on the
// agent's own port a line of output would be an agent write racing the
// raw frames.
//
//	hostile flood STREAMS BODY   open STREAMS streams on the agent's port, each announcing a megabyte and sending BODY bytes
//	hostile reuse                open one stream id twice on the agent's port
//	hostile fetch N NAME         N concurrent fetches of NAME over $MICROAGENT_SECRETS_SOCK; prints a JSON summary
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/internal/hostileguest"
)

// firstID is far above the ids the agent's own yamux session uses (it
// counts up from 2), so the flood never collides with them by accident.
const firstID = 1 << 24

func main() {
	if len(os.Args) < 2 {
		fail("usage: hostile flood|reuse|fetch ...")
	}
	switch os.Args[1] {
	case "flood":
		streams, body := atoi(arg(2)), atoi(arg(3))
		port := agentPort()
		sent, err := hostileguest.Flood(port, firstID, streams, body)
		if err != nil {
			fail(fmt.Sprintf("flood: %v after %d bytes", err, sent))
		}
		fmt.Printf("sent %d bytes on %d streams\n", sent, streams)
	case "reuse":
		if err := hostileguest.ReuseID(agentPort(), firstID); err != nil {
			fail(err.Error())
		}
	case "fetch":
		fetchFlood(atoi(arg(2)), arg(3))
	default:
		fail("unknown attack " + os.Args[1])
	}
}

// agentPort takes the agent's descriptor of its virtio-serial port (PID
// 1's), as a guest's root can: the port itself opens only once.
func agentPort() *os.File {
	pidfd, err := unix.PidfdOpen(1, 0)
	if err != nil {
		fail(fmt.Sprintf("pidfd_open(1): %v", err))
	}
	ents, err := os.ReadDir("/proc/1/fd")
	if err != nil {
		fail(err.Error())
	}
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/1/fd", e.Name()))
		if !strings.Contains(target, "vport") {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, atoi(e.Name()), 0)
		if err != nil {
			fail(fmt.Sprintf("pidfd_getfd(1, %s): %v", e.Name(), err))
		}
		return os.NewFile(uintptr(fd), target)
	}
	fail("the agent holds no virtio port")
	return nil
}

// fetchFlood runs n fetches of name at once and prints how many were
// answered, and every distinct error text.
func fetchFlood(n int, name string) {
	var mu sync.Mutex
	sum := struct {
		OK     int            `json:"ok"`
		Errors map[string]int `json:"errors"`
	}{Errors: map[string]int{}}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := fetchOne(name)
			mu.Lock()
			defer mu.Unlock()
			if msg == "" {
				sum.OK++
			} else {
				sum.Errors[msg]++
			}
		}()
	}
	wg.Wait()
	json.NewEncoder(os.Stdout).Encode(sum)
}

func fetchOne(name string) string {
	c, err := net.Dial("unix", os.Getenv("MICROAGENT_SECRETS_SOCK"))
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s\n", name)
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return "read: " + err.Error()
	}
	var r struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return "decode: " + err.Error()
	}
	if r.OK {
		return ""
	}
	return r.Error
}

func arg(i int) string {
	if i >= len(os.Args) {
		fail("missing argument")
	}
	return os.Args[i]
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		fail(err.Error())
	}
	return n
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "hostile:", msg)
	os.Exit(1)
}
