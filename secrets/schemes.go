package secrets

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// envResolver implements env:VAR: a variable of the CLI's own environment.
type envResolver struct{}

func (envResolver) Plaintext() bool { return true }

func (envResolver) Validate(ref string) (string, error) {
	if !ValidName(ref) {
		return "", Errorf(ErrBadRef, "env reference: want env:VAR with VAR matching [A-Za-z_][A-Za-z0-9_]*")
	}
	return ref, nil
}

func (r envResolver) Resolve(_ context.Context, ref string, env LookupEnv) (*Value, error) {
	if _, err := r.Validate(ref); err != nil {
		return nil, err
	}
	s, ok := env(ref)
	if !ok {
		return nil, Errorf(ErrNotFound, "environment variable %s is not set: export it in the shell that runs microagent", ref)
	}
	if s == "" {
		return nil, Errorf(ErrEmpty, "environment variable %s is set but empty", ref)
	}
	// The environment holds the value as a string already; this copy is the
	// one microagent owns and zeroes.
	return NewValue([]byte(s)), nil
}

// fileResolver implements file:PATH: a file's bytes exactly as stored.
type fileResolver struct{}

func (fileResolver) Plaintext() bool { return true }

func (fileResolver) Validate(ref string) (string, error) {
	return absPath("file", ref)
}

func (fileResolver) Resolve(_ context.Context, ref string, _ LookupEnv) (*Value, error) {
	b, err := readSecretFile("file", ref, MaxValueSize)
	if err != nil {
		return nil, err
	}
	return NewValue(b), nil
}

// dotenvResolver implements dotenv:PATH#KEY: one key of a dotenv file.
type dotenvResolver struct{}

func (dotenvResolver) Plaintext() bool { return true }

// maxDotenvFile bounds a dotenv file: a few values at MaxValueSize each.
const maxDotenvFile = 4 * MaxValueSize

func splitDotenvRef(ref string) (path, key string, err error) {
	i := strings.LastIndexByte(ref, '#')
	if i < 0 {
		return "", "", Errorf(ErrBadRef, "dotenv reference: want dotenv:PATH#KEY (no '#KEY')")
	}
	path, key = ref[:i], ref[i+1:]
	if path == "" {
		return "", "", Errorf(ErrBadRef, "dotenv reference: want dotenv:PATH#KEY (empty PATH)")
	}
	if !ValidName(key) {
		return "", "", Errorf(ErrBadRef, "dotenv reference: want dotenv:PATH#KEY with KEY matching [A-Za-z_][A-Za-z0-9_]*")
	}
	return path, key, nil
}

func (dotenvResolver) Validate(ref string) (string, error) {
	path, key, err := splitDotenvRef(ref)
	if err != nil {
		return "", err
	}
	abs, err := absPath("dotenv", path)
	if err != nil {
		return "", err
	}
	return abs + "#" + key, nil
}

func (dotenvResolver) Resolve(_ context.Context, ref string, _ LookupEnv) (*Value, error) {
	path, key, err := splitDotenvRef(ref)
	if err != nil {
		return nil, err
	}
	entries, err := readDotenv(path)
	if err != nil {
		return nil, err
	}
	defer ZeroDotenv(entries)
	for i, e := range entries {
		if e.Key == key {
			if e.Value.Len() == 0 {
				return nil, Errorf(ErrEmpty, "key %s in %s has an empty value", key, path)
			}
			entries[i].Value = nil // ownership moves to the caller
			return e.Value, nil
		}
	}
	return nil, Errorf(ErrNotFound, "key %s not found in %s", key, path)
}

// readDotenv reads and parses a dotenv file, zeroing the raw bytes.
func readDotenv(path string) ([]DotenvEntry, error) {
	data, err := readSecretFile("dotenv", path, maxDotenvFile)
	if err != nil {
		return nil, err
	}
	defer clear(data)
	entries, err := ParseDotenv(data)
	if err != nil {
		return nil, Errorf(ErrInvalid, "dotenv file %s: %w", path, err)
	}
	return entries, nil
}

// dotenvKeys returns the keys of a dotenv file, in file order.
func dotenvKeys(path string) ([]string, error) {
	entries, err := readDotenv(path)
	if err != nil {
		return nil, err
	}
	defer ZeroDotenv(entries)
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = e.Key
	}
	return keys, nil
}

func absPath(scheme, p string) (string, error) {
	if p == "" {
		return "", Errorf(ErrBadRef, "%s reference: empty path", scheme)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", Errorf(ErrBadRef, "%s reference %s: %w", scheme, p, err)
	}
	return abs, nil
}

// readSecretFile reads a regular file of at most limit bytes, classifying
// failures. The error names the path, never the content.
func readSecretFile(scheme, path string, limit int) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO must not hang; it is refused below as not
	// a regular file. It changes nothing for regular files.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, classifyFileErr(scheme, path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, classifyFileErr(scheme, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, Errorf(ErrInvalid, "%s %s is not a regular file (%s)", scheme, path, fi.Mode().Type())
	}
	if fi.Size() > int64(limit) {
		return nil, Errorf(ErrTooLarge, "%s %s is %d bytes, more than the %d-byte limit", scheme, path, fi.Size(), limit)
	}
	b, err := readBounded(f, int(fi.Size()), limit)
	if errors.Is(err, errTooBig) {
		return nil, Errorf(ErrTooLarge, "%s %s grew past the %d-byte limit while being read", scheme, path, limit)
	}
	if err != nil {
		return nil, classifyFileErr(scheme, path, err)
	}
	return b, nil
}

func classifyFileErr(scheme, path string, err error) error {
	// The os error already names the path; keep only its cause.
	var pe *fs.PathError
	cause := err
	if errors.As(err, &pe) {
		cause = pe.Err
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Errorf(ErrNotFound, "%s %s does not exist", scheme, path)
	case errors.Is(err, fs.ErrPermission):
		return Errorf(ErrDenied, "%s %s: permission denied: make it readable by the user running microagent", scheme, path)
	case errors.Is(err, syscall.ENOTDIR):
		return Errorf(ErrNotFound, "%s %s does not exist (a parent is not a directory)", scheme, path)
	case errors.Is(err, syscall.EISDIR):
		return Errorf(ErrInvalid, "%s %s is a directory, not a file", scheme, path)
	}
	return Errorf(ErrInvalid, "%s %s: %w", scheme, path, cause)
}
