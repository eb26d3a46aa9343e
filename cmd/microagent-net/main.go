// Command microagent-net is the user-mode network of one microagent VM
// (see vmm/usernet for why it is a program of its own and for its
// descriptors): it reads its configuration from standard input (and then
// policy changes, one per line, until it is closed), serves
// the VMM's socket on descriptor 3 and the published ports' listeners from
// descriptor 4 on, writes "ready" and then its decisions to standard
// output, and exits 0 when the VMM closes the socket. It is started by
// microagent, never by hand.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/microagent-dev/microagent/vmm/usernet"
	"github.com/microagent-dev/microagent/vmm/usernet/intercept"
	"github.com/microagent-dev/microagent/vmm/usernet/stack"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", usernet.BinaryName, err)
		os.Exit(1)
	}
}

func run() error {
	if err := usernet.DropRoot(); err != nil {
		return err
	}
	// gvisor-tap-vsock's tap package logs every frame it cannot deliver;
	// only its warnings and errors belong in the start error we report.
	logrus.SetLevel(logrus.WarnLevel)
	logrus.SetOutput(os.Stderr)

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 64<<10), maxLine)
	var cfg usernet.Config
	if err := readLine(in, &cfg); err != nil {
		return fmt.Errorf("reading the configuration on standard input: %w (this program is started by microagent)", err)
	}
	vmmEnd, err := net.FileConn(os.NewFile(3, "vmm"))
	if err != nil {
		return fmt.Errorf("descriptor 3 is not the VMM's socket: %w", err)
	}
	var listeners []net.Listener
	for i := range cfg.GuestPorts {
		l, err := net.FileListener(os.NewFile(uintptr(4+i), "published"))
		if err != nil {
			return fmt.Errorf("descriptor %d is not a published port's listener: %w", 4+i, err)
		}
		listeners = append(listeners, l)
	}
	var src intercept.Source
	if cfg.Swap != nil {
		fd := 4 + len(cfg.GuestPorts)
		c, err := net.FileConn(os.NewFile(uintptr(fd), "values"))
		if err != nil {
			return fmt.Errorf("descriptor %d is not the value socket: %w", fd, err)
		}
		src = usernet.NewValueClient(c)
	}
	n, err := stack.New(cfg, os.Stdout, src)
	if err != nil {
		return err
	}
	if _, err := fmt.Println(usernet.ReadyLine); err != nil {
		return err
	}
	go func() {
		// Until microagent closes standard input (or exits): a line that
		// is not a policy ends the changes, and the policy in force stays.
		for {
			var p usernet.Policy
			if err := readLine(in, &p); err != nil {
				if !errors.Is(err, io.EOF) {
					fmt.Fprintf(os.Stderr, "%s: policy changes: %v\n", usernet.BinaryName, err)
				}
				return
			}
			n.SetPolicy(p)
		}
	}()
	return n.Serve(context.Background(), vmmEnd, listeners)
}

// maxLine bounds one line of standard input (a configuration or policy
// with a long allowlist).
const maxLine = 1 << 20

// readLine decodes the next line of in into v, refusing unknown fields.
func readLine(in *bufio.Scanner, v any) error {
	if !in.Scan() {
		if err := in.Err(); err != nil {
			return err
		}
		return io.EOF
	}
	dec := json.NewDecoder(bytes.NewReader(in.Bytes()))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
