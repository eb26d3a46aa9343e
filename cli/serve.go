package cli

import (
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/mcpserver"
)

func newServeCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "serve",
		Short: "Serve workspaces to other programs (serve mcp: AI agents over the Model Context Protocol)",
		Args:  cobra.NoArgs,
	}
	c.AddCommand(newServeMCPCmd(g))
	return c
}

func newServeMCPCmd(g *globals) *cobra.Command {
	var httpAddr, tokenFile, policyFile string
	c := &cobra.Command{
		Use:   "mcp [--http 127.0.0.1:PORT [--token-file FILE]] [--policy FILE]",
		Short: "Let an AI agent drive workspaces through the Model Context Protocol",
		Long: `Serve MCP tools (workspace_create, workspace_exec, file_read, snapshot_create,
workspace_fork, ... see docs/mcp.md) on stdin and stdout, as MCP clients start
servers:

  claude mcp add --transport stdio microagent -- microagent serve mcp

--http 127.0.0.1:PORT serves streamable HTTP at http://127.0.0.1:PORT/mcp instead
(loopback addresses only), behind a bearer token: the first line of
--token-file, or one generated and printed once on stderr.

The agent is not the operator: --policy FILE (YAML) sets the images it may use,
the most workspaces at once, memory/CPU/disk caps, the network of everything it
creates, the secrets those workspaces get, and whether it may touch workspaces
it did not create. Without it: any image, at most 4 workspaces, profiles tiny
and small, the default network, no secrets, only its own workspaces.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if tokenFile != "" && httpAddr == "" {
				return usageError("--token-file needs --http: over stdio the client that started the server is the only one talking to it")
			}
			if httpAddr != "" {
				if err := mcpserver.CheckLoopback(httpAddr); err != nil {
					return usageError("%v", err)
				}
			}
			var policy *mcpserver.Policy
			if policyFile != "" {
				p, err := mcpserver.LoadPolicy(policyFile)
				if err != nil {
					return usageError("%v", err)
				}
				policy = p
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			s := mcpserver.New(mcpserver.Options{Home: h, Policy: policy, Version: Version})
			if httpAddr == "" {
				return s.ServeStdio(c.Context(), g.stdin, g.stdout)
			}
			var token []byte
			generated := tokenFile == ""
			if generated {
				token, err = mcpserver.GenerateToken()
			} else {
				token, err = mcpserver.LoadToken(tokenFile)
			}
			if err != nil {
				return err
			}
			defer clear(token)
			return s.ServeHTTP(c.Context(), httpAddr, token, func(a net.Addr) {
				fmt.Fprintf(g.stderr, "microagent: serving MCP at http://%s%s\n", a, mcpserver.HTTPPath)
				if generated {
					fmt.Fprintf(g.stderr, "microagent: bearer token (shown only now; use --token-file to choose one): %s\n", token)
				}
			})
		},
	}
	c.Flags().StringVar(&httpAddr, "http", "", "serve streamable HTTP on this loopback ADDRESS:PORT instead of stdio")
	c.Flags().StringVar(&tokenFile, "token-file", "", "with --http: the bearer token is this file's first line (default: generated, printed once on stderr)")
	c.Flags().StringVar(&policyFile, "policy", "", "the operator's policy (YAML): see docs/mcp.md")
	return c
}
