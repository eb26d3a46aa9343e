package mcpserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/workspace"
	"github.com/microagent-dev/microagent/wsdir"
)

func TestPolicyDefaults(t *testing.T) {
	p := DefaultPolicy()
	if p.MaxWorkspaces != 4 || strings.Join(p.Profiles, ",") != "tiny,small" || p.MaxMemoryMiB != 256 || p.MaxCPUs != 1 {
		t.Fatalf("defaults: %+v", p)
	}
	if p.TouchOthers || len(p.decls.Secrets) != 0 || p.network.EgressNone || len(p.network.AllowNames) != 0 {
		t.Fatalf("defaults must grant nothing: %+v", p)
	}
	if p.CreatedBy() != "mcp:default" {
		t.Fatalf("mark %q", p.CreatedBy())
	}
}

func TestParsePolicy(t *testing.T) {
	p, err := ParsePolicy("p.yaml", []byte(`
owner: ci
images: ["docker.io/library/*", "127.0.0.1:*/*"]
max_workspaces: 2
profiles: [tiny, small, medium]
max_cpus: 1
network:
  egress_allow: [".example.org"]
secrets:
  API_KEY: env:API_TOKEN
secrets_on_demand:
  DB: file:/run/db
touch_others: true
`))
	if err != nil {
		t.Fatal(err)
	}
	if p.MaxMemoryMiB != 1024 || p.MaxCPUs != 1 || p.MaxWorkspaces != 2 || !p.TouchOthers || p.CreatedBy() != "mcp:ci" {
		t.Fatalf("policy: %+v", p)
	}
	if len(p.decls.Secrets) != 2 || p.decls.Secrets[0].Name != "API_KEY" || !p.decls.Secrets[1].OnDemand {
		t.Fatalf("secrets: %+v", p.decls.Secrets)
	}
	if len(p.network.AllowNames) != 1 {
		t.Fatalf("network: %+v", p.network)
	}
	for _, bad := range []struct{ yaml, want string }{
		{"max_workspace: 3", "max_workspace"}, // misspelt: never silently no limit
		{"profiles: [huge]", "unknown profile"},
		{"images: ['[']", "images"},
		{"network: {egress: some}", "egress"},
		{"network: {egress_allow_cidr: [x]}", "egress_allow_cidr"},
		{"secrets: {A: nope}", "secrets"},
		{"max_workspaces: -1", "max_workspaces"},
		{"max_snapshots: -1", "max_snapshots"},
		{"max_image_mib: -1", "max_image_mib"},
		{"owner: 'a b'", "owner"},
	} {
		if _, err := ParsePolicy("p.yaml", []byte(bad.yaml)); err == nil || !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), "p.yaml") {
			t.Errorf("%q: err %v, want one naming %q and the file", bad.yaml, err, bad.want)
		}
	}
}

func TestPolicyChecks(t *testing.T) {
	p, err := ParsePolicy("p.yaml", []byte("images: [\"docker.io/library/alpine:*\"]\nmax_memory_mib: 200\n"))
	if err != nil {
		t.Fatal(err)
	}
	for ref, ok := range map[string]bool{"alpine:3.20": true, "docker.io/library/alpine:3.20": true, "ubuntu:24.04": false, "evil.example/alpine:3": false} {
		err := p.checkImage(ref)
		if (err == nil) != ok {
			t.Errorf("image %s: %v", ref, err)
		}
		if err != nil && !isPolicy(err, "images") {
			t.Errorf("image %s: %v does not name the policy field", ref, err)
		}
	}
	if r, err := p.resources("", 0, 0, 0); err != nil || r.MemoryMiB > 200 && err == nil {
		// small (256 MiB) is over max_memory_mib 200: refused, naming it.
		if !isPolicy(err, "max_memory_mib") {
			t.Errorf("default profile over the memory cap: %v", err)
		}
	}
	if _, err := p.resources("tiny", 0, 2, 0); !isPolicy(err, "max_cpus") {
		t.Errorf("2 CPUs: %v", err)
	}
	if _, err := p.resources("medium", 0, 0, 0); !isPolicy(err, "profiles") {
		t.Errorf("medium: %v", err)
	}
	if _, err := p.resources("tiny", 0, 0, 4096); !isPolicy(err, "max_disk_mib") {
		t.Errorf("4 GiB disk: %v", err)
	}
	if r, err := p.resources("tiny", 0, 0, 0); err != nil || r.MemoryMiB != 128 {
		t.Errorf("tiny: %+v %v", r, err)
	}
}

func isPolicy(err error, field string) bool {
	var pe *PolicyError
	return errors.As(err, &pe) && pe.Field == field && strings.Contains(err.Error(), `policy "`+field+`"`)
}

func TestLooksLikeSecretRef(t *testing.T) {
	for s, want := range map[string]bool{
		"env:HOME": true, "API=vault:kv/data/x#y": true, "file:/etc/passwd": true, "helper:op://x": true,
		"dotenv:/x#K": true, "hello": false, "https://example.org": false, "docker.io/library/alpine:3.20": false,
		"127.0.0.1:5000/x:1": false, "env:": false, "A=b": false,
	} {
		if got := looksLikeSecretRef(s); got != want {
			t.Errorf("%q: %v, want %v", s, got, want)
		}
	}
}

// connect serves s to an in-memory client.
func connect(t *testing.T, s *Server, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	ctx := context.Background()
	st, ct := mcp.NewInMemoryTransports()
	ss, err := s.MCP().Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, opts).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// call calls a tool and returns its text and whether it was an error.
func call(t *testing.T, cs *mcp.ClientSession, name string, args any) (*mcp.CallToolResult, string) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: protocol error %v", name, err)
	}
	var text []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			text = append(text, tc.Text)
		}
	}
	return res, strings.Join(text, "\n")
}

// wantRefusal calls a tool that the policy must refuse by field.
func wantRefusal(t *testing.T, cs *mcp.ClientSession, field, tool string, args any) {
	t.Helper()
	res, text := call(t, cs, tool, args)
	if !res.IsError || !strings.Contains(text, `refused by policy "`+field+`"`) {
		t.Errorf("%s %v: %v %q, want a refusal by %s", tool, args, res.IsError, text, field)
	}
}

// The refusals that need no VM, through the protocol: every one names
// the policy field, and nothing is created.
func TestRefusalsWithoutVM(t *testing.T) {
	h := home.Home{Root: t.TempDir()}
	p, err := ParsePolicy("p.yaml", []byte("images: [\"127.0.0.1:*/*\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	cs := connect(t, New(Options{Home: h, Policy: p}), nil)
	wantRefusal(t, cs, "images", "workspace_create", map[string]any{"name": "a", "image": "docker.io/library/alpine:3.20"})
	wantRefusal(t, cs, "profiles", "workspace_create", map[string]any{"name": "a", "image": "127.0.0.1:1/x:1", "profile": "large"})
	wantRefusal(t, cs, "max_memory_mib", "workspace_create", map[string]any{"name": "a", "image": "127.0.0.1:1/x:1", "memory_mib": 4096})
	wantRefusal(t, cs, "secrets", "workspace_create", map[string]any{"name": "a", "image": "127.0.0.1:1/x:1", "secrets": map[string]string{"K": "env:HOME"}})
	wantRefusal(t, cs, "secrets", "workspace_exec", map[string]any{"name": "a", "argv": []string{"true"}, "env": map[string]string{"K": "vault:kv/data/x#y"}})
	wantRefusal(t, cs, "secrets", "workspace_exec", map[string]any{"name": "a", "argv": []string{"cat", "file:/etc/shadow"}})
	// Data fields are not settings: text shaped like a reference is data.
	if res, text := call(t, cs, "file_write", map[string]any{"name": "a", "path": "/x", "content": "env:HOME"}); !res.IsError || strings.Contains(text, "policy") {
		t.Errorf("file_write of reference-shaped content: %q (want the missing workspace, not a refusal)", text)
	}
	res, text := call(t, cs, "workspace_exec", map[string]any{"name": "a", "argv": []string{"true"}, "timeout_seconds": -1})
	if !res.IsError {
		t.Errorf("missing workspace: %q", text)
	}
	res, text = call(t, cs, "workspace_list", map[string]any{})
	if res.IsError || !strings.Contains(text, `"workspaces":[]`) {
		t.Errorf("list: %q", text)
	}
	if entries, _ := os.ReadDir(h.Path("workspaces")); len(entries) != 0 {
		t.Errorf("refused calls left %d entries", len(entries))
	}
}

// A line that is not JSON-RPC gets an error reply and the session goes on.
func TestStdioMalformedLines(t *testing.T) {
	s := New(Options{Home: home.Home{Root: t.TempDir()}})
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeStdio(ctx, inR, outW); outW.Close() }()
	sc := bufio.NewScanner(outR)
	sc.Buffer(nil, 1<<20)
	send := func(line string) {
		if _, err := io.WriteString(inW, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	next := func() map[string]any {
		if !sc.Scan() {
			t.Fatalf("no reply: %v", sc.Err())
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("reply %q: %v", sc.Text(), err)
		}
		return m
	}
	send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	if m := next(); m["result"] == nil {
		t.Fatalf("initialize: %v", m)
	}
	send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	send(`not json at all {`)
	if m := next(); m["error"].(map[string]any)["code"].(float64) != -32700 {
		t.Fatalf("garbage: %v", m)
	}
	send(`{"id":9,"method":"x"}`)
	if m := next(); m["id"].(float64) != 9 || m["error"].(map[string]any)["code"].(float64) != -32600 {
		t.Fatalf("not JSON-RPC: %v", m)
	}
	send(strings.Repeat("x", maxLine+10))
	if m := next(); m["error"] == nil {
		t.Fatalf("overlong line: %v", m)
	}
	send(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	if m := next(); m["id"].(float64) != 2 || m["result"] == nil {
		t.Fatalf("tools/list after the bad lines: %v", m)
	}
	inW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not end with its input")
	}
	cancel()
}

func TestHTTPLoopbackAndToken(t *testing.T) {
	for _, a := range []string{"0.0.0.0:1", ":1", "192.0.2.1:1", "example.org:1", "nohost"} {
		if err := CheckLoopback(a); err == nil {
			t.Errorf("%s accepted", a)
		}
	}
	for _, a := range []string{"127.0.0.1:0", "[::1]:8080", "localhost:1"} {
		if err := CheckLoopback(a); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	if _, err := LoadToken(short); err == nil {
		t.Error("short token accepted")
	}
	tokFile := filepath.Join(dir, "tok")
	os.WriteFile(tokFile, []byte("  0123456789abcdef0123\nignored\n"), 0o600)
	tok, err := LoadToken(tokFile)
	if err != nil || string(tok) != "0123456789abcdef0123" {
		t.Fatalf("token %q %v", tok, err)
	}

	s := New(Options{Home: home.Home{Root: t.TempDir()}})
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- s.ServeHTTP(ctx, "127.0.0.1:0", tok, func(a net.Addr) { addrc <- a }) }()
	var url string
	select {
	case a := <-addrc:
		url = "http://" + a.String() + HTTPPath
	case err := <-done:
		t.Fatal(err)
	}
	resp, err := http.Post(url, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token: %s", resp.Status)
	}
	hc := &http.Client{Transport: bearer{string(tok)}}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil || len(tools.Tools) != 17 {
		t.Fatalf("tools over HTTP: %d %v", len(tools.Tools), err)
	}
	cs.Close()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

type bearer struct{ tok string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return http.DefaultTransport.RoundTrip(r)
}

// TestForkInherits: a fork keeps its source's network and secrets, so a
// source made under another policy (other egress, other secrets) is
// refused, naming the policy line; one made under this policy is not.
func TestForkInherits(t *testing.T) {
	p := DefaultPolicy()
	same := wsdir.NewNetworkConfig(p.network)
	same.Publish = []wsdir.Port{{HostPort: 8080, GuestPort: 80, Protocol: "tcp"}} // not inherited
	if err := p.checkInherited(&workspace.Info{Name: "ok", Network: &same}); err != nil {
		t.Fatalf("a source of this policy: %v", err)
	}
	open := wsdir.NetworkConfig{Mode: "user", HostAccess: true}
	var pe *PolicyError
	if err := p.checkInherited(&workspace.Info{Name: "wide", Network: &open}); !errors.As(err, &pe) || pe.Field != "network" {
		t.Fatalf("a source with host access: %v", err)
	}
	var d secrets.Declarations
	d.Add(secrets.Decl{Name: "K", Ref: secrets.Ref{Scheme: "env", Ref: "K"}})
	if err := p.checkInherited(&workspace.Info{Name: "secret", Network: &same, Secrets: &wsdir.SecretsConfig{Declarations: d}}); !errors.As(err, &pe) || pe.Field != "secrets" {
		t.Fatalf("a source with secrets the policy does not give: %v", err)
	}
}
