package mcpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/workspace"
)

// Options configure a Server.
type Options struct {
	// Home is the state directory whose workspaces the server manages.
	Home home.Home
	// Policy is what the agent may do (nil: DefaultPolicy).
	Policy *Policy
	// Executable runs the workspaces' supervisors (default: this program,
	// see workspace.StartOptions.Executable).
	Executable string
	// Agent is the guest agent binary (empty: the installed one).
	Agent string
	// Version is reported to clients.
	Version string
	// Pull is when workspace_create contacts the registry (the zero
	// value: image.PullMissing).
	Pull image.PullPolicy
}

// Server is an MCP server whose tools drive workspaces under a policy.
type Server struct {
	o   Options
	p   *Policy
	srv *mcp.Server
	// createMu makes counting the owner's workspaces and creating one a
	// single step, so concurrent creates cannot pass max_workspaces.
	createMu sync.Mutex
	// snapMu makes counting a workspace's snapshots and capturing one a
	// single step, so concurrent captures cannot pass max_snapshots.
	snapMu sync.Mutex
}

// Name is the server's name in the MCP handshake.
const Name = "microagent"

// New builds the server and its tools.
func New(o Options) *Server {
	p := o.Policy
	if p == nil {
		p = DefaultPolicy()
	}
	s := &Server{o: o, p: p}
	s.srv = mcp.NewServer(&mcp.Implementation{Name: Name, Title: "microagent workspaces", Version: o.Version}, &mcp.ServerOptions{
		Instructions: instructions,
		Capabilities: &mcp.ServerCapabilities{},
	})
	s.srv.AddReceivingMiddleware(s.refuseSecretRefs)
	s.addWorkspaceTools()
	s.addFileTools()
	return s
}

const instructions = `Workspaces are Linux microVMs with a persistent disk. ` +
	`Create one (workspace_create), boot it (workspace_start), run commands (workspace_exec), ` +
	`move files (file_read, file_write, file_list), snapshot and fork it, and delete it when done. ` +
	`An operator's policy limits images, sizes, the number of workspaces, the network and secrets; ` +
	`a refusal names the policy field that refused.`

// MCP is the underlying SDK server (for transports of the caller's own).
func (s *Server) MCP() *mcp.Server { return s.srv }

// refuseSecretRefs refuses a tool call any of whose arguments looks like a
// secret reference: secrets are the operator's to declare (policy field
// secrets), and a reference names host files and backends.
func (s *Server) refuseSecretRefs(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if method != "tools/call" {
			return next(ctx, method, req)
		}
		params, ok := req.GetParams().(*mcp.CallToolParamsRaw)
		if !ok || len(params.Arguments) == 0 {
			return next(ctx, method, req)
		}
		var args any
		if err := json.Unmarshal(params.Arguments, &args); err != nil {
			return next(ctx, method, req) // the tool's own validation says what is wrong
		}
		if where, found := findSecretRef(args, ""); found {
			r := &mcp.CallToolResult{}
			r.SetError(s.p.refuse("secrets", "argument %s looks like a secret reference or declaration: an agent cannot declare secrets; the operator lists the secrets every workspace gets in the policy", where))
			return r, nil
		}
		return next(ctx, method, req)
	}
}

// dataFields carry data, not settings: file contents and stdin may hold
// any text, including text shaped like a reference.
var dataFields = map[string]bool{"content": true, "stdin": true}

// findSecretRef walks decoded JSON for a secret reference, a secret
// declaration, or a field named like one.
func findSecretRef(v any, at string) (string, bool) {
	switch v := v.(type) {
	case string:
		return at, looksLikeSecretRef(v)
	case []any:
		for i, e := range v {
			if w, ok := findSecretRef(e, fmt.Sprintf("%s[%d]", at, i)); ok {
				return w, true
			}
		}
	case map[string]any:
		for k, e := range v {
			w := k
			if at != "" {
				w = at + "." + k
			}
			if k == "secrets" || k == "secret" || k == "secrets_on_demand" {
				return w, true
			}
			if at == "" && dataFields[k] {
				continue
			}
			if looksLikeSecretRef(k) {
				return w, true
			}
			if w, ok := findSecretRef(e, w); ok {
				return w, true
			}
		}
	}
	return "", false
}

// visible returns a workspace the agent may act on: one this owner
// created, unless the policy lets it touch others.
func (s *Server) visible(ctx context.Context, name string) (*workspace.Info, error) {
	if err := workspace.ValidateName(name); err != nil {
		return nil, err
	}
	inf, err := workspace.Status(ctx, s.o.Home, name)
	if err != nil {
		return nil, err
	}
	if !s.mine(inf) {
		return nil, s.p.refuse("touch_others", "workspace %q was not created through this server (owner %q): use workspace_list to see yours", name, s.p.Owner)
	}
	return inf, nil
}

func (s *Server) mine(inf *workspace.Info) bool {
	return s.p.TouchOthers || inf.CreatedBy == s.p.CreatedBy()
}

// toolError turns a library error into what an agent can act on: the
// library's words (which name CLI commands) and the tool to call.
func toolError(err error) error {
	var hint string
	switch {
	case errors.Is(err, context.Canceled):
		return errors.New("cancelled")
	case errors.Is(err, workspace.ErrNotRunning):
		hint = "start it with workspace_start first"
	case errors.Is(err, workspace.ErrRunning):
		hint = "halt it with workspace_halt first"
	case errors.Is(err, workspace.ErrPaused):
		hint = "it is paused: resume it with the CLI (microagent resume NAME)"
	case errors.Is(err, workspace.ErrBusy):
		hint = "another operation on it is in progress: retry in a few seconds"
	case errors.Is(err, workspace.ErrSnapshotNotFound):
		hint = "snapshot_list shows its snapshots"
	case errors.Is(err, workspace.ErrNotFound):
		hint = "workspace_list shows the workspaces you may use"
	case errors.Is(err, workspace.ErrExists):
		hint = "pick another name"
	case errors.Is(err, workspace.ErrInvalidName), errors.Is(err, workspace.ErrInvalidTag):
		hint = "names and tags are letters, digits, '_', '.', '-'"
	}
	if hint == "" {
		return err
	}
	return fmt.Errorf("%w (%s)", err, hint)
}

// progress sends MCP progress notifications for one call, when the client
// asked for them with a progress token; without one it does nothing.
type progress struct {
	ctx   context.Context
	req   *mcp.CallToolRequest
	token any
	mu    sync.Mutex
	n     float64
}

func newProgress(ctx context.Context, req *mcp.CallToolRequest) *progress {
	p := &progress{ctx: ctx, req: req}
	if req != nil && req.Params != nil {
		p.token = req.Params.GetProgressToken()
	}
	return p
}

// say sends one notification; progress grows by one each time, as the
// protocol wants it to increase.
func (p *progress) say(format string, args ...any) {
	if p.token == nil || p.req.Session == nil {
		return
	}
	p.mu.Lock()
	p.n++
	n := p.n
	p.mu.Unlock()
	p.req.Session.NotifyProgress(p.ctx, &mcp.ProgressNotificationParams{ProgressToken: p.token, Progress: n, Message: fmt.Sprintf(format, args...)})
}

// Write makes p a progress writer for the library (pull and build lines).
func (p *progress) Write(b []byte) (int, error) {
	if msg := trimLine(b); msg != "" {
		p.say("%s", msg)
	}
	return len(b), nil
}

// tick reports what is under way every interval until stop is called.
func (p *progress) tick(what string, interval time.Duration) (stop func()) {
	if p.token == nil {
		return func() {}
	}
	start := time.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		p.say("%s", what)
		for {
			select {
			case <-done:
				return
			case <-p.ctx.Done():
				return
			case <-t.C:
				p.say("%s (%ds)", what, int(time.Since(start).Seconds()))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func trimLine(b []byte) string {
	const maxMsg = 200
	s := string(b)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	if len(s) > maxMsg {
		s = s[:maxMsg]
	}
	return s
}

// executable is the supervisor binary for Start.
func (s *Server) executable() string {
	if s.o.Executable != "" {
		return s.o.Executable
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return exe
}

func ptr[T any](v T) *T { return &v }
