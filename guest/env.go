//go:build linux

package guest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultPath is used when the image sets no PATH.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// buildEnv layers the process environment: defaults, then the image's, then
// the request's, later entries replacing earlier ones with the same key.
func buildEnv(image, request []string, id identity, hostname string, tty bool) []string {
	defaults := []string{"PATH=" + DefaultPath, "HOME=" + id.home, "HOSTNAME=" + hostname}
	if tty {
		defaults = append(defaults, "TERM=xterm")
	}
	var keys []string
	vals := map[string]string{}
	for _, layer := range [][]string{defaults, image, request} {
		for _, kv := range layer {
			k, v, _ := strings.Cut(kv, "=")
			if k == "" {
				continue
			}
			if _, ok := vals[k]; !ok {
				keys = append(keys, k)
			}
			vals[k] = v
		}
	}
	env := make([]string, 0, len(keys))
	for _, k := range keys {
		env = append(env, k+"="+vals[k])
	}
	return env
}

func envGet(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// errNotFound and errNotExecutable map to the shell's exit codes 127 and 126.
var (
	errNotFound      = errors.New("not found")
	errNotExecutable = errors.New("not executable")
)

// lookPath finds file in the process's PATH (not the agent's), relative
// names resolved against dir.
func lookPath(file, path, dir string) (string, error) {
	check := func(p string) error {
		abs := p
		if !filepath.IsAbs(abs) {
			abs = filepath.Join(dir, abs)
		}
		fi, err := os.Stat(abs)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return errNotFound
			}
			return err
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return errNotExecutable
		}
		return nil
	}
	if strings.Contains(file, "/") {
		if err := check(file); err != nil {
			return "", fmt.Errorf("command %q: %w", file, err)
		}
		return file, nil
	}
	var firstErr error
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, file)
		err := check(p)
		if err == nil {
			return p, nil
		}
		if firstErr == nil && !errors.Is(err, errNotFound) {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", fmt.Errorf("command %q: %w", file, firstErr)
	}
	return "", fmt.Errorf("command %q %w in the image (PATH=%s)", file, errNotFound, path)
}
