// Command netserver is the guest side of the network benchmark in a
// microagent VM: it serves netpeer transfers on netpeer.Port until killed.
package main

import (
	"fmt"
	"net"
	"os"

	"github.com/microagent-dev/microagent/bench/netpeer"
)

func main() {
	l, err := net.Listen("tcp4", fmt.Sprintf(":%d", netpeer.Port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "netserver:", err)
		os.Exit(1)
	}
	fmt.Println("NETSERVER listening")
	if err := netpeer.Serve(l); err != nil {
		fmt.Fprintln(os.Stderr, "netserver:", err)
		os.Exit(1)
	}
}
