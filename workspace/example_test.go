package workspace_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/workspace"
)

// The whole loop of the issue: create, start, exec, halt, start on the
// same disk, delete. (Not run as a test: it needs QEMU, a kernel and a
// registry; see lifecycle_test.go for the tested version.)
func Example() {
	ctx := context.Background()
	h, _ := home.Resolve("")
	if _, err := workspace.Create(ctx, h, workspace.CreateOptions{Name: "app", Image: "docker.io/library/alpine:3.20"}); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := workspace.Start(ctx, h, workspace.StartOptions{Name: "app"}); err != nil {
		fmt.Println(err)
		return
	}
	es, err := workspace.Exec(ctx, h, workspace.ExecOptions{
		Name: "app", Argv: []string{"sh", "-c", "echo hi > /root/f"}, Stdout: os.Stdout, Stderr: os.Stderr,
	})
	fmt.Println(es.Code, err)
	workspace.Halt(ctx, h, workspace.HaltOptions{Name: "app"})
	workspace.Start(ctx, h, workspace.StartOptions{Name: "app"})
	workspace.Exec(ctx, h, workspace.ExecOptions{Name: "app", Argv: []string{"cat", "/root/f"}, Stdout: os.Stdout})
	workspace.Halt(ctx, h, workspace.HaltOptions{Name: "app"})
	workspace.Delete(ctx, h, workspace.DeleteOptions{Name: "app"})
}

func ExampleValidateName() {
	for _, name := range []string{"app", "my_ws-2", "App", "-x"} {
		fmt.Println(name, workspace.ValidateName(name) == nil)
	}
	// Output:
	// app true
	// my_ws-2 true
	// App false
	// -x false
}

func ExampleList() {
	dir, _ := os.MkdirTemp("", "microagent-example-")
	defer os.RemoveAll(dir)
	infos, err := workspace.List(context.Background(), home.Home{Root: dir})
	fmt.Println(len(infos), err)
	// Output: 0 <nil>
}

func ExampleStatus() {
	dir, _ := os.MkdirTemp("", "microagent-example-")
	defer os.RemoveAll(dir)
	_, err := workspace.Status(context.Background(), home.Home{Root: dir}, "app")
	fmt.Println(errors.Is(err, workspace.ErrNotFound))
	// Output: true
}

// Exec passes the command's exit code through; a workspace that is not
// running is an error wrapping ErrNotRunning (ErrBusy while it starts or
// halts).
func ExampleExec() {
	ctx := context.Background()
	h, _ := home.Resolve("")
	es, err := workspace.Exec(ctx, h, workspace.ExecOptions{
		Name: "app", Argv: []string{"sh", "-c", "exit 3"},
	})
	switch {
	case errors.Is(err, workspace.ErrNotRunning):
		fmt.Println("start it first")
	case err != nil:
		fmt.Println(err)
	default:
		fmt.Println("exit code", es.Code)
	}
}

// A second lifecycle command on the same workspace is refused while the
// first holds the lock; the error says which command holds it.
func ExampleHalt() {
	ctx := context.Background()
	h, _ := home.Resolve("")
	inf, err := workspace.Halt(ctx, h, workspace.HaltOptions{Name: "app"})
	if errors.Is(err, workspace.ErrBusy) {
		fmt.Println("try again later:", err)
		return
	}
	if err == nil {
		fmt.Println(inf.State, inf.Reason)
	}
}

func ExampleGC() {
	dir, _ := os.MkdirTemp("", "microagent-example-")
	defer os.RemoveAll(dir)
	rep, err := workspace.GC(context.Background(), home.Home{Root: dir})
	fmt.Println(len(rep.Removed), len(rep.Killed), err)
	// Output: 0 0 <nil>
}
