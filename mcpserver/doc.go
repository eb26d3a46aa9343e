// Package mcpserver is "microagent serve mcp": a Model Context Protocol
// server whose tools create, boot, run commands in, copy files to and
// from, snapshot, fork and delete workspaces, through package workspace
// (the library the CLI uses), under an operator's Policy.
//
// The agent is not the operator: the policy decides the images, sizes,
// number of workspaces, network and secrets, and by default the agent
// sees and touches only the workspaces created through a server of the
// same policy owner (marked in their manifests, workspace.Info.CreatedBy).
// Every refusal is a tool error naming the policy field that refused it;
// no tool input can crash the server. The tool names are a contract with
// clients: see docs/mcp.md.
package mcpserver
