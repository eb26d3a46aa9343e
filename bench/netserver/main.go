// Command netserver is the guest side of the network benchmark in a
// microagent VM. Without arguments it serves netpeer transfers on
// netpeer.Port until killed. As "netserver client ADDR OP COUNT BYTES" it
// times COUNT transfers of its own to the netpeer server at ADDR (the
// guest dialling out): OP is U (upload, guest to host), D (download, host
// to guest) or C (connection setup: a one-byte download), and it prints
// one duration in nanoseconds per line.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
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
	if len(args) != 5 || args[0] != "client" {
		return fmt.Errorf("usage: netserver [client ADDR U|D|C COUNT BYTES]")
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
