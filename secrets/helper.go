package secrets

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// HelperEnv names the variable that holds the helper program's path.
const HelperEnv = "MICROAGENT_SECRET_HELPER"

// DefaultHelperTimeout bounds one helper run when HelperResolver.Timeout is 0.
const DefaultHelperTimeout = 30 * time.Second

// maxHelperStderr bounds the helper's stderr kept for the error message.
const maxHelperStderr = 4096

// HelperResolver implements helper:<ref>: it runs the program named by
// MICROAGENT_SECRET_HELPER (a path, or a name looked up in PATH; not a
// shell command line) with <ref> as its only argument, stdin empty, in the
// process's environment. The value is its stdout minus one trailing
// newline. A non-zero exit fails with the helper's stderr in the message;
// stdout is never shown. The run is bounded by Timeout and the helper's
// whole process group is killed when it expires.
//
// This is the adapter for any secret manager with a CLI (pass, sops -d,
// op read, aws secretsmanager ...).
type HelperResolver struct {
	// Timeout bounds one run; 0 means DefaultHelperTimeout.
	Timeout time.Duration
}

// Plaintext is false: what the helper reads is its business.
func (*HelperResolver) Plaintext() bool { return false }

// Validate rejects a reference starting with '-', which the helper would
// take for an option.
func (*HelperResolver) Validate(ref string) (string, error) {
	if strings.HasPrefix(ref, "-") {
		return "", Errorf(ErrBadRef, "helper reference must not start with '-' (the helper would read it as an option)")
	}
	return ref, nil
}

// Resolve runs the helper.
func (h *HelperResolver) Resolve(ctx context.Context, ref string, env LookupEnv) (*Value, error) {
	if _, err := h.Validate(ref); err != nil {
		return nil, err
	}
	prog, _ := env(HelperEnv)
	if prog == "" {
		return nil, Errorf(ErrConfig, "%s is not set: point it at a program that prints the secret named by its argument", HelperEnv)
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = DefaultHelperTimeout
	}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// Stdout goes through a pipe read here rather than exec's copying
	// goroutine, so every buffer holding the value is one this package
	// zeroes.
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, Errorf(ErrHelper, "helper %s: %w", prog, err)
	}
	defer pr.Close()
	var stderr limitedBuffer
	cmd := exec.CommandContext(runCtx, prog, ref)
	cmd.Stdout = pw
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Kill the whole group: a shell script's children too.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		pw.Close()
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return nil, Errorf(ErrConfig, "%s=%s: program not found", HelperEnv, prog)
		}
		if errors.Is(err, os.ErrPermission) {
			return nil, Errorf(ErrConfig, "%s=%s: not executable", HelperEnv, prog)
		}
		return nil, Errorf(ErrHelper, "helper %s: %v", prog, err)
	}
	pw.Close()
	// A grandchild that escaped the group could hold the pipe open: the
	// read deadline bounds that too.
	_ = pr.SetReadDeadline(time.Now().Add(timeout + time.Second))
	out, readErr := readBounded(pr, 0, MaxValueSize+1)
	pr.Close()
	waitErr := cmd.Wait()

	fail := func(kind error, format string, args ...any) (*Value, error) {
		clear(out)
		return nil, Errorf(kind, format, args...)
	}
	if ctx.Err() != nil {
		return fail(ErrUnavailable, "helper %s %s canceled", prog, ref)
	}
	if runCtx.Err() != nil {
		return fail(ErrUnavailable, "helper %s %s did not finish within %v%s", prog, ref, timeout, stderr.suffix())
	}
	if errors.Is(readErr, errTooBig) {
		// Checked before the exit status: closing the pipe early makes the
		// helper die of SIGPIPE.
		return fail(ErrTooLarge, "helper %s %s printed more than %d bytes", prog, ref, MaxValueSize)
	}
	if waitErr != nil {
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) {
			return fail(ErrHelper, "helper %s %s failed (%v)%s", prog, ref, ee.ProcessState, stderr.suffix())
		}
		return fail(ErrHelper, "helper %s %s: %v%s", prog, ref, waitErr, stderr.suffix())
	}
	if readErr != nil {
		return fail(ErrHelper, "helper %s %s: reading its output: %v", prog, ref, readErr)
	}
	out = bytes.TrimSuffix(out, []byte("\n"))
	if len(out) > MaxValueSize {
		return fail(ErrTooLarge, "helper %s %s printed more than %d bytes", prog, ref, MaxValueSize)
	}
	if len(out) == 0 {
		return fail(ErrEmpty, "helper %s %s printed nothing", prog, ref)
	}
	return NewValue(out), nil
}

// limitedBuffer keeps the first maxHelperStderr bytes written to it.
type limitedBuffer struct {
	b bytes.Buffer
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxHelperStderr - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// suffix returns ": stderr: <text>" or "" when the helper printed nothing.
func (l *limitedBuffer) suffix() string {
	s := oneLine(l.b.String(), 1024)
	if s == "" {
		return ""
	}
	return ": stderr: " + s
}
