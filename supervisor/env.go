package supervisor

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// envFD is the descriptor of the environment the start command hands the
// supervisor (see EnvFile).
const envFD = 4

// envFileName names the memfd; the supervisor checks it before trusting
// descriptor envFD.
const envFileName = "microagent-env"

// maxEnv bounds the environment read from envFD.
const maxEnv = 16 << 20

// EnvFile holds environ (NAME=VALUE entries, os.Environ's form) in an
// anonymous memory file for Command to pass as descriptor envFD. The
// supervisor is started with a minimal environment of its own, so its
// /proc/PID/environ, which lasts as long as it does, never shows what an
// env: reference names or a backend's token (VAULT_TOKEN ...); it reads
// these from the file, zeroes it, and resolves its secrets with them. The
// caller closes the file once the supervisor started. The bytes built
// here are zeroed before it returns.
func EnvFile(environ []string) (*os.File, error) {
	fd, err := unix.MemfdCreate(envFileName, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("environment for the supervisor: %w", err)
	}
	f := os.NewFile(uintptr(fd), envFileName)
	var b []byte
	for _, kv := range environ {
		b = append(b, kv...)
		b = append(b, 0)
	}
	_, err = f.Write(b)
	clear(b)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("environment for the supervisor: %w", err)
	}
	return f, nil
}

// receiveEnv reads the environment the start command passed as envFD (if
// it did) into the process's environment (Go's copy, which children that
// are given no Env of their own inherit: a secret helper; not the one
// the kernel shows in /proc/PID/environ), then zeroes and closes the file.
// Without the descriptor nothing changes.
func receiveEnv() error {
	link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", envFD))
	if err != nil || !strings.HasPrefix(link, "/memfd:"+envFileName) {
		return nil // not given one
	}
	f := os.NewFile(envFD, envFileName)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxEnv+1))
	defer clear(b)
	if err != nil {
		return fmt.Errorf("read the environment from the start command: %w", err)
	}
	if len(b) > maxEnv {
		return fmt.Errorf("the environment from the start command is larger than %d bytes", maxEnv)
	}
	// Zero the file's pages before letting them go.
	if _, err := f.WriteAt(make([]byte, len(b)), 0); err == nil {
		f.Truncate(0)
	}
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if !ok || len(k) == 0 {
			continue
		}
		os.Setenv(string(k), string(v))
	}
	return nil
}
