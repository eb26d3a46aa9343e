// Command microagent runs AI-agent workspaces in Linux microVMs booted from
// OCI images. See the README for a tour.
package main

import (
	"os"

	"github.com/microagent-dev/microagent/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
