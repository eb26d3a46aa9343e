//go:build linux

package guest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/channel"
)

// linkSecret makes it's value appear at it.Mount/it.Path: a tmpfs owned by
// root (mode 0755, so a workload that is not root cannot change what is
// there) is mounted at Mount once, and Path in it becomes a symbolic link
// to the secret's file in the secrets folder, as a Kubernetes secret
// volume's files are links. The value itself stays in one file, which a
// purge scrubs; a link left behind points at nothing. The caller has
// checked the target (channel.CheckSecretTarget).
func (a *Agent) linkSecret(it channel.SecretItem) error {
	mount := filepath.Join(a.secrets.root, it.Mount)
	if err := os.MkdirAll(mount, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", it.Mount, err)
	}
	// Mounting follows symbolic links: a link the workload planted on the
	// way (before a rehydration, say) would steer the mount elsewhere.
	if real, err := filepath.EvalSymlinks(mount); err != nil || real != mount {
		return fmt.Errorf("secret mount %s: the path goes through a symbolic link: refused", it.Mount)
	}
	if !isMountPoint(mount) {
		if err := unix.Mount("tmpfs", mount, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=1m,nr_inodes=1024"); err != nil {
			return fmt.Errorf("mount a tmpfs on %s: %w", it.Mount, err)
		}
	}
	target := filepath.Join(mount, it.Path)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", filepath.Dir(it.Path), err)
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace %s: %w", it.Path, err)
	}
	return os.Symlink(filepath.Join(a.secrets.dir, it.Name), target)
}

// secretEnvironment reads the values of the secrets delivered as variables
// into "NAME=value" entries for one exec. The bytes behind the strings are
// the returned buffers: the caller zeroes them (release) once the process
// has started, so the agent keeps no copy; a secret whose file is gone (a
// purge before a snapshot) is left out.
func (a *Agent) secretEnvironment() (env []string, release func()) {
	a.mu.Lock()
	names := a.secrets.envNames
	a.mu.Unlock()
	var bufs [][]byte
	for _, name := range names {
		b, err := readSecretFile(filepath.Join(a.secrets.dir, name), name)
		if err != nil || len(b) == 0 {
			continue
		}
		bufs = append(bufs, b)
		env = append(env, unsafe.String(&b[0], len(b)))
	}
	return env, func() {
		for _, b := range bufs {
			zero(b)
		}
		if len(bufs) > 0 {
			releaseLater() // the copies the exec made of the environment
		}
	}
}

// readSecretFile returns "name=" and the file's content in one buffer, at
// most channel.MaxSecret bytes of it, without following a link.
func readSecretFile(path, name string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > channel.MaxSecret {
		return nil, errors.New("not a secret file")
	}
	b := make([]byte, len(name)+1+int(fi.Size()))
	copy(b, name+"=")
	n, err := f.ReadAt(b[len(name)+1:], 0)
	if n != int(fi.Size()) {
		zero(b)
		return nil, fmt.Errorf("short read: %v", err)
	}
	return b, nil
}
