//go:build linux

package guest

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/channel"
)

// Where secrets live in the guest (the spec's paths).
const (
	SecretsDir  = "/run/secrets"
	SecretsSock = "/run/secrets-api.sock"
	// SecretsSockEnv is set in every process's environment while the
	// on-demand socket is served.
	SecretsSockEnv = "MICROAGENT_SECRETS_SOCK"
)

// maxRequestLine bounds one request on the secrets socket.
const maxRequestLine = 256

// secretName is the shape of a secret's name: environment-variable like,
// so it is always a safe file name.
var secretName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// zero overwrites b, so a buffer that carried a value holds none.
func zero(b []byte) { clear(b) }

// releaseMemory runs the garbage collector and returns every free page to
// the kernel (madvise DONTNEED), which zeroes pages as it frees them when
// the guest boots with init_on_free=1. What this cannot reach: freed
// objects in spans that still hold live objects keep their bytes until
// reused (Go zeroes on allocation, not on free). Values never sit there in
// plaintext (they arrive sealed and their buffers are zeroed); key material
// inside crypto/hpke may, see channel.OpenSecrets.
func releaseMemory() { debug.FreeOSMemory() }

// releaseLater asks for a releaseMemory soon, off the caller's path;
// requests made while one is pending share it. On-demand fetches use it:
// a burst of them costs one collection, and a purge (before any snapshot)
// releases synchronously anyway.
func releaseLater() {
	releaseOnce.Do(func() {
		go func() {
			for range releaseReq {
				releaseMemory()
			}
		}()
	})
	select {
	case releaseReq <- struct{}{}:
	default: // one is already pending
	}
}

var (
	releaseOnce sync.Once
	releaseReq  = make(chan struct{}, 1)
)

// secretsState is the agent's view of delivered secrets.
// fetchSlots bounds the fetch streams the agent has open to the host at
// once, well under the streams the host serves (channel.MaxGuestStreams):
// more would only be reset by the host's backlog, unanswered and
// uncounted. The rest of a burst waits here, in the guest, where it costs
// the workload's memory, and is answered (or refused by the host's own
// limits) in turn.
var fetchSlots = make(chan struct{}, channel.MaxGuestStreams/2)

// fetchSlotWait bounds that wait: under the socket's 30 s deadline.
const fetchSlotWait = 20 * time.Second

type secretsState struct {
	dir, sock string
	onDemand  []string
	listener  net.Listener
	// root prefixes the trust-store paths the egress CA is installed at
	// ("": the guest's /; tests use a folder).
	root string
	// egressEnv are the secret swap's variables for every exec: the
	// placeholders, and where the CA is (guarded by Agent.mu).
	egressEnv []string
	// envNames are the secrets whose values every exec gets as variables,
	// read from their files at each exec (guarded by Agent.mu).
	envNames []string
}

// materialize handles OpSecrets: it receives the values sealed to a key
// made for this delivery, writes each to a tmpfs file (mode 0400, owned by
// the image's user), zeroes them, then serves the on-demand socket if names
// were declared.
func (a *Agent) materialize(st io.ReadWriter, req *channel.SecretsRequest) channel.Reply {
	// Refuse before the key exchange: the host reads the refusal in place
	// of the key.
	for _, it := range req.Items {
		if !secretName.MatchString(it.Name) {
			return channel.Reply{Error: fmt.Sprintf("secret name %q is not a valid name", it.Name)}
		}
		if it.Size < 0 || it.Size > channel.MaxSecret {
			return channel.Reply{Error: fmt.Sprintf("secret %s: size %d out of range", it.Name, it.Size)}
		}
		if it.Mount != "" || it.Path != "" {
			if err := channel.CheckSecretTarget(it.Mount, it.Path); err != nil {
				return channel.Reply{Error: fmt.Sprintf("secret %s: %v", it.Name, err)}
			}
		}
	}
	if err := checkEgress(req); err != nil {
		return channel.Reply{Error: err.Error()}
	}
	values, err := channel.OpenSecrets(st, req.Items)
	// Whatever happens next, the plaintexts are zeroed and the freed memory
	// (with the key material crypto/hpke kept) is handed back to the kernel,
	// which zeroes it (init_on_free=1).
	defer releaseMemory()
	defer func() {
		for _, v := range values {
			zero(v)
		}
	}()
	if err != nil {
		return channel.ErrorReply(err)
	}
	id, err := lookupUser(a.config().User)
	if err != nil {
		return channel.Reply{Error: fmt.Sprintf("secrets owner: %v", err)}
	}
	s := &a.secrets
	if err := mountSecrets(s.dir, id); err != nil {
		return channel.ErrorReply(err)
	}
	for i, it := range req.Items {
		if err := writeSecret(filepath.Join(s.dir, it.Name), values[i], id); err != nil {
			return channel.Reply{Error: fmt.Sprintf("secret %s: %v", it.Name, err)}
		}
	}
	var envNames []string
	for _, it := range req.Items {
		if it.Mount != "" {
			if err := a.linkSecret(it); err != nil {
				return channel.Reply{Error: fmt.Sprintf("secret %s: %v", it.Name, err)}
			}
		}
		if it.Env {
			envNames = append(envNames, it.Name)
		}
	}
	if err := a.writePlaceholders(req, id); err != nil {
		return channel.ErrorReply(err)
	}
	a.mu.Lock()
	s.onDemand = slices.Clone(req.OnDemand)
	s.envNames = envNames
	a.mu.Unlock()
	if len(req.OnDemand) > 0 && !a.secretsSocket() {
		if err := a.serveSecretsSocket(id); err != nil {
			return channel.ErrorReply(err)
		}
	}
	return channel.Reply{}
}

// mountSecrets mounts a private tmpfs at dir unless one is there: values
// live in memory only, never on the root disk.
func mountSecrets(dir string, id identity) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	if isMountPoint(dir) {
		return nil // mounted by an earlier delivery (a rehydration)
	}
	opts := fmt.Sprintf("mode=0700,uid=%d,gid=%d,size=64m,nr_inodes=4096", id.uid, id.gid)
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return fmt.Errorf("mount a tmpfs on %s: %w", dir, err)
	}
	return nil
}

// isMountPoint reports whether dir is on another device than its parent.
func isMountPoint(dir string) bool {
	var a, b unix.Stat_t
	if unix.Stat(dir, &a) != nil || unix.Stat(filepath.Dir(dir), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

// writeSecret writes value to path (replacing any older file) as 0400 owned by id.
func writeSecret(path string, value []byte, id identity) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_EXCL, 0o400)
	if err != nil {
		return err
	}
	_, err = f.Write(value)
	if err == nil {
		err = f.Chown(int(id.uid), int(id.gid))
	}
	if err == nil {
		err = f.Chmod(0o400)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// An older value is zeroed before the new one takes its name; if
		// that fails, the rename still replaces it.
		scrubPath(path)
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// scrubPath scrubs path (see scrubAt) through its parent directory.
func scrubPath(path string) error {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	_, err = scrubAt(dir, filepath.Base(path))
	return err
}

// scrubAt removes name from the directory dir, first overwriting it with
// zeros of its length and syncing it when it is a regular file, and tells
// whether it was. The secrets folder belongs to the image's user, who can
// put anything there for the agent, which runs as root: a symlink to a
// root-only file (following it would zero that file), a FIFO (opening it
// for writing blocks until a reader comes), a device node, a directory.
// So only a regular file is written to, through a descriptor opened with
// O_NOFOLLOW|O_NONBLOCK and checked with fstat, since the entry may be
// swapped between the look and the open; anything else is removed
// without being opened.
func scrubAt(dir *os.File, name string) (zeroed bool, err error) {
	dfd := int(dir.Fd())
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, &os.PathError{Op: "lstat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err == nil {
			// A 0400 file is still writable by root (the agent).
			if zeroed, err = zeroFile(fd, name); err != nil {
				return false, err
			}
		} else if unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Mode&unix.S_IFMT == unix.S_IFREG {
			return false, &os.PathError{Op: "open", Path: name, Err: err}
		} // else swapped for something that is not a file: removed below
	}
	err = unix.Unlinkat(dfd, name, 0)
	if errors.Is(err, unix.EISDIR) {
		// os.RemoveAll does not follow symlinks inside the tree.
		err = os.RemoveAll(filepath.Join(dir.Name(), name))
	}
	if err != nil {
		return zeroed, &os.PathError{Op: "remove", Path: name, Err: err}
	}
	return zeroed, nil
}

// zeroFile overwrites the file open as fd with zeros of its length and
// syncs it, if it is a regular file (fstat, after the open), and closes
// it; it tells whether it did.
func zeroFile(fd int, name string) (bool, error) {
	f := os.NewFile(uintptr(fd), name)
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return false, err
	}
	buf := make([]byte, 32<<10)
	for left := fi.Size(); left > 0 && err == nil; {
		n := min(int64(len(buf)), left)
		_, err = f.Write(buf[:n])
		left -= n
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err == nil, err
}

// purge handles OpPurge: every regular file in the secrets folder is
// zeroed, synced and removed, and anything else there removed (see
// scrubAt). Any failure is reported, so the host refuses to go on.
func (a *Agent) purge() channel.Reply {
	defer releaseMemory()
	// The folder itself is a mount point, which its owner cannot replace.
	dir, err := os.Open(a.secrets.dir)
	if errors.Is(err, os.ErrNotExist) {
		return jsonReply(channel.PurgeReply{Purged: []string{}})
	}
	if err != nil {
		return channel.Reply{Error: fmt.Sprintf("read %s: %v", a.secrets.dir, err)}
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return channel.Reply{Error: fmt.Sprintf("read %s: %v", a.secrets.dir, err)}
	}
	slices.Sort(names)
	purged := []string{}
	for _, name := range names {
		zeroed, err := scrubAt(dir, name)
		if err != nil {
			return channel.Reply{Error: fmt.Sprintf("purge %s: %v", filepath.Join(a.secrets.dir, name), unwrapPathErr(err))}
		}
		if zeroed {
			purged = append(purged, name) // only files can hold a value
		}
	}
	unix.Sync()
	// The placeholders' files went with the rest; the next delivery (the
	// same boot's, or a restore's new ones) sets the variables again.
	a.mu.Lock()
	a.secrets.egressEnv = nil
	a.mu.Unlock()
	return jsonReply(channel.PurgeReply{Purged: purged})
}

func jsonReply(v any) channel.Reply {
	b, err := json.Marshal(v)
	if err != nil {
		return channel.ErrorReply(err)
	}
	return channel.Reply{Data: b}
}

// serveSecretsSocket listens on the on-demand socket, owned by the image's
// user with mode 0600.
func (a *Agent) serveSecretsSocket(id identity) error {
	s := &a.secrets
	os.Remove(s.sock)
	l, err := net.Listen("unix", s.sock)
	if err != nil {
		return fmt.Errorf("secrets socket %s: %w", s.sock, err)
	}
	if err := os.Chmod(s.sock, 0o600); err == nil {
		err = os.Chown(s.sock, int(id.uid), int(id.gid))
	}
	if err != nil {
		l.Close()
		return fmt.Errorf("secrets socket %s: %w", s.sock, err)
	}
	a.mu.Lock()
	s.listener = l
	a.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go a.answerSecretRequest(c)
		}
	}()
	return nil
}

// ParseSecretRequest parses one request line of the secrets socket: "GET
// <name>" (the newline already removed).
func ParseSecretRequest(line string) (string, error) {
	verb, name, ok := strings.Cut(line, " ")
	if !ok || verb != "GET" {
		return "", errors.New(`bad request: send "GET <name>\n"`)
	}
	if !secretName.MatchString(name) {
		return "", errors.New("bad request: invalid secret name")
	}
	return name, nil
}

// answerSecretRequest serves one client: one request line, one reply line.
// Every fetch goes to the host, which decides, audits and resolves afresh.
func (a *Agent) answerSecretRequest(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxRequestLine), maxRequestLine).ReadString('\n')
	if err != nil {
		writeSecretReply(c, nil, errors.New("bad request: one line of at most 255 bytes, ending in a newline"))
		return
	}
	name, err := ParseSecretRequest(strings.TrimSuffix(line, "\n"))
	if err != nil {
		writeSecretReply(c, nil, err)
		return
	}
	sess := a.session()
	if sess == nil {
		writeSecretReply(c, nil, errors.New("the host is not connected"))
		return
	}
	select {
	case fetchSlots <- struct{}{}:
	case <-time.After(fetchSlotWait):
		writeSecretReply(c, nil, errors.New("too many fetches are waiting for the host: retry later"))
		return
	}
	v, err := channel.Fetch(sess, name)
	<-fetchSlots
	writeSecretReply(c, v, err)
	zero(v)
	// The value now lives in the workload's memory (its own to manage)
	// and in the socket's kernel buffers until read (freed, so zeroed).
	releaseLater()
}

// writeSecretReply writes {"ok":true,"value":"<base64>"} or
// {"ok":false,"error":"..."}, zeroing the encoded copy afterwards.
func writeSecretReply(w io.Writer, value []byte, err error) {
	if err != nil {
		b, _ := json.Marshal(struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}{false, err.Error()})
		w.Write(append(b, '\n'))
		return
	}
	const pre, post = `{"ok":true,"value":"`, "\"}\n"
	out := make([]byte, len(pre)+base64.StdEncoding.EncodedLen(len(value))+len(post))
	copy(out, pre)
	base64.StdEncoding.Encode(out[len(pre):], value)
	copy(out[len(out)-len(post):], post)
	w.Write(out)
	zero(out)
}

// session returns the current host session, or nil between sessions.
func (a *Agent) session() *yamux.Session {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sess
}

// secretsSocket reports whether the on-demand socket is served.
func (a *Agent) secretsSocket() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.secrets.listener != nil
}
