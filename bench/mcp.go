package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// mcpSession is a real MCP client session (the official Go SDK) with
// `microagent serve mcp` over stdio, whose policy lets it touch the
// benchmark's workspaces (which it did not create).
type mcpSession struct {
	s *mcp.ClientSession
}

func startMCP(ctx context.Context, e *env) (*mcpSession, error) {
	policy := filepath.Join(e.tmp, "mcp-policy.yaml")
	if err := os.WriteFile(policy, []byte("touch_others: true\n"), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(e.exe, "--state-dir", e.h.Root, "serve", "mcp", "--policy", policy)
	c := mcp.NewClient(&mcp.Implementation{Name: "microagent-bench", Version: "1"}, nil)
	s, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		return nil, fmt.Errorf("serve mcp: %w", err)
	}
	return &mcpSession{s: s}, nil
}

// execTrue is workspace_exec of ["true"] in workspace name.
func (m *mcpSession) execTrue(ctx context.Context, name string) error {
	res, err := m.s.CallTool(ctx, &mcp.CallToolParams{Name: "workspace_exec", Arguments: map[string]any{"name": name, "argv": []string{"true"}}})
	if err != nil {
		return fmt.Errorf("workspace_exec: %w", err)
	}
	var out struct {
		ExitCode int `json:"exit_code"`
	}
	b, _ := json.Marshal(res.StructuredContent)
	if res.IsError || json.Unmarshal(b, &out) != nil || out.ExitCode != 0 {
		return fmt.Errorf("workspace_exec true: error %v, result %s", res.IsError, b)
	}
	return nil
}

func (m *mcpSession) close() { m.s.Close() }
