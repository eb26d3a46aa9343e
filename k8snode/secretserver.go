package k8snode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/microagent-dev/microagent/secrets"
)

// SecretSocket is the file name, in the node's state directory, of the
// socket the workspaces' supervisors resolve k8s: references on.
const SecretSocket = "k8s-secrets.sock"

// secretRequestTimeout bounds one request on the socket, the apiserver's
// answer included.
const secretRequestTimeout = 20 * time.Second

// maxSecretConns bounds the requests served at once: each holds a Secret
// read from the apiserver.
const maxSecretConns = 16

// getSecretFunc reads a Secret with the node's credentials.
type getSecretFunc func(ctx context.Context, namespace, name string) (*corev1.Secret, error)

// secretServer answers k8s: references for the node's workspaces: only a
// reference some pod the node runs declared, in that pod's namespace, each
// read afresh from the apiserver so a rotated Secret takes effect at the
// next start or fetch. Values are never kept, nor written anywhere.
type secretServer struct {
	path string
	get  getSecretFunc
	l    net.Listener

	mu      sync.Mutex
	allowed map[string]map[secrets.K8sRef]bool // by pod (namespace/name)
}

// listenSecrets serves the socket at path (mode 0600; a stale one from an
// earlier node process is replaced) until close.
func listenSecrets(path string, get getSecretFunc) (*secretServer, error) {
	if len(path) >= 108 {
		return nil, fmt.Errorf("secret socket %s: longer than a unix socket path may be (107 bytes): use a shorter state directory", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("secret socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("secret socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("secret socket %s: %w", path, err)
	}
	s := &secretServer{path: path, get: get, l: l, allowed: map[string]map[secrets.K8sRef]bool{}}
	go s.serve()
	return s, nil
}

func (s *secretServer) close() {
	s.l.Close()
	os.Remove(s.path)
}

// allow lets the pod's references be resolved; one outside the pod's
// namespace is never allowed.
func (s *secretServer) allow(pod, namespace string, refs []secrets.K8sRef) {
	set := map[secrets.K8sRef]bool{}
	for _, r := range refs {
		if r.Namespace == namespace {
			set[r] = true
		}
	}
	s.mu.Lock()
	s.allowed[pod] = set
	s.mu.Unlock()
}

// forget withdraws what allow allowed for the pod.
func (s *secretServer) forget(pod string) {
	s.mu.Lock()
	delete(s.allowed, pod)
	s.mu.Unlock()
}

func (s *secretServer) allowedRef(r secrets.K8sRef) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, set := range s.allowed {
		if set[r] {
			return true
		}
	}
	return false
}

func (s *secretServer) serve() {
	slots := make(chan struct{}, maxSecretConns)
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		slots <- struct{}{}
		go func() {
			defer func() { <-slots }()
			defer c.Close()
			s.answer(c)
		}()
	}
}

// answer serves one request: one frame in, one frame out (see
// secrets.ReadK8sRequest).
func (s *secretServer) answer(c net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), secretRequestTimeout)
	defer cancel()
	_ = c.SetDeadline(time.Now().Add(secretRequestTimeout))
	ref, err := secrets.ReadK8sRequest(c)
	if err != nil {
		_ = secrets.WriteK8sError(c, err)
		return
	}
	if !s.allowedRef(ref) {
		_ = secrets.WriteK8sError(c, secrets.Errorf(secrets.ErrDenied, "no pod this node runs declares it: refused"))
		return
	}
	value, err := s.read(ctx, ref)
	if err != nil {
		_ = secrets.WriteK8sError(c, err)
		return
	}
	_ = secrets.WriteK8sValue(c, value)
	clear(value)
}

// read returns a copy of the key's value, the Secret's own bytes zeroed.
func (s *secretServer) read(ctx context.Context, ref secrets.K8sRef) ([]byte, error) {
	sec, err := s.get(ctx, ref.Namespace, ref.Secret)
	if err != nil {
		return nil, secretGetError(ref, err)
	}
	defer zeroSecret(sec)
	v, ok := sec.Data[ref.Key]
	if !ok {
		return nil, secrets.Errorf(secrets.ErrNoField, "Secret %s/%s has no key %s", ref.Namespace, ref.Secret, ref.Key)
	}
	return append([]byte(nil), v...), nil
}

// secretGetError sorts an apiserver failure into the secrets kinds; its
// message is the apiserver's, which never holds a value.
func secretGetError(ref secrets.K8sRef, err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return secrets.Errorf(secrets.ErrNotFound, "Secret %s/%s not found", ref.Namespace, ref.Secret)
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return secrets.Errorf(secrets.ErrDenied, "reading Secret %s/%s: %v", ref.Namespace, ref.Secret, err)
	}
	return secrets.Errorf(secrets.ErrUnavailable, "reading Secret %s/%s: %v", ref.Namespace, ref.Secret, err)
}

// zeroSecret zeroes the values of a Secret read from the apiserver (the
// copies client-go decoded for us).
func zeroSecret(sec *corev1.Secret) {
	for _, v := range sec.Data {
		clear(v)
	}
}
