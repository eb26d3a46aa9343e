package supervisor

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/vmm"
)

// CommandName is the hidden subcommand of the microagent binary that runs
// a supervisor. Command builds its command line and ParseArgs reads it
// back (Main to run it, gc to recognise supervisors among processes): the
// two live side by side so the contract is written once.
//
//	<exe> --state-dir <state> __supervise <name> --boot <n>
//
// with the readiness pipe as file descriptor 3 (see Ready) and the start
// command's environment as descriptor 4 (see EnvFile); its own
// environment is only PATH and the locale (vmm.ChildEnv).
const CommandName = "__supervise"

// readyFD is the readiness pipe's descriptor in the supervisor.
const readyFD = 3

// Args are a supervisor's command line arguments.
type Args struct {
	// StateDir is the state directory (home.Home's root).
	StateDir string
	// Name is the workspace.
	Name string
	// Boot is the boot number the start recorded.
	Boot int
}

// Command is the supervisor process of boot a.Boot of workspace a.Name,
// run by the microagent binary exe: in its own session (no terminal signal
// reaches it, and it outlives the start command), in /, reading
// /dev/null, writing log, with ready as its readiness pipe and env (from
// EnvFile; nil for none) the environment it resolves secrets in.
func Command(exe string, a Args, log, null, ready, env *os.File) *exec.Cmd {
	cmd := exec.Command(exe, "--state-dir", a.StateDir, CommandName, a.Name, "--boot", strconv.Itoa(a.Boot))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, log, log
	cmd.Env = vmm.ChildEnv()
	cmd.ExtraFiles = []*os.File{ready} // descriptor readyFD
	if env != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, env) // descriptor envFD
	}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd
}

// ParseArgs reads a supervisor's command line (argv[0] is the program),
// as Command writes it; ok is false for any other command line.
func ParseArgs(argv []string) (a Args, ok bool) {
	if len(argv) != 7 || argv[1] != "--state-dir" || argv[3] != CommandName || argv[5] != "--boot" {
		return Args{}, false
	}
	boot, err := strconv.Atoi(argv[6])
	if err != nil || boot < 1 || argv[2] == "" || argv[4] == "" {
		return Args{}, false
	}
	return Args{StateDir: filepath.Clean(argv[2]), Name: argv[4], Boot: boot}, true
}

// Main is the supervisor process's entry point: argv is the whole command
// line (os.Args) as Command built it; the log is stderr. It returns when
// the workspace's VM has stopped; ctx ending (SIGTERM) halts it.
func Main(ctx context.Context, argv []string, stderr io.Writer) error {
	a, ok := ParseArgs(argv)
	if !ok {
		return fmt.Errorf("%s: this command is started by \"microagent start\", not by hand", CommandName)
	}
	if err := receiveEnv(); err != nil {
		return err
	}
	var ready *os.File
	if f := os.NewFile(readyFD, "ready"); f != nil {
		if _, err := f.Stat(); err == nil {
			ready = f
		}
	}
	return Run(ctx, home.Home{Root: a.StateDir}, Options{Name: a.Name, Boot: a.Boot, Ready: ready, Log: stderr})
}
