// Package k8snode registers this host as a Kubernetes node (through
// Virtual Kubelet) and runs each pod bound to it as one microagent
// workspace: the pod's image becomes the workspace's, its one container's
// command a long exec in it, its output a bounded log on the host, and its
// phase and container state are pushed to the apiserver as they change.
// kubectl logs, exec and delete work through package workspace; pods
// never run as containers on the host.
//
// What a pod may ask for is checked before anything is created (planPod):
// a pod this node cannot run exactly as written is refused with an event
// and marked Failed, never half-run. docs/kubernetes.md lists what is
// supported.
package k8snode

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/hostcheck"
	"github.com/microagent-dev/microagent/vmm"
)

// Taint keeps pods off this node unless they tolerate it: a pod here runs
// in a microVM, not a container, and must say it expects that.
var Taint = corev1.Taint{Key: "microagent.dev/microvm", Value: "true", Effect: corev1.TaintEffectNoSchedule}

// Labels this node sets besides Virtual Kubelet's.
const (
	LabelAccelerator = "microagent.dev/accelerator"
	LabelVersion     = "microagent.dev/version"
)

// DefaultMaxPods is the node's pod (workspace) ceiling when none is given.
const DefaultMaxPods = 32

// memoryReserveMiB is kept back from the node's memory for the host, the
// supervisors and QEMU's own overhead.
const memoryReserveMiB = 1024

// Config says how to run the node.
type Config struct {
	// Home is the state directory the node's workspaces live in.
	Home home.Home
	// Kubeconfig is the file with the node's credentials.
	Kubeconfig string
	// NodeName is the node's name (see ValidateNodeName).
	NodeName string
	// Address is the IP the apiserver reaches this node's kubelet API on
	// (empty: this host's address on the route to the apiserver).
	Address string
	// Listen is the kubelet API's address (host:port); the node's
	// advertised port is its port.
	Listen string
	// ClientCA is a PEM file of the CAs whose client certificates may call
	// the kubelet API (the apiserver's); empty: the kubeconfig's cluster CA.
	ClientCA string
	// TLSCert and TLSKey are the kubelet API's serving certificate; empty:
	// a self-signed one made at start (the apiserver verifies kubelets
	// only with --kubelet-certificate-authority).
	TLSCert, TLSKey string
	// MaxPods is the workspace ceiling (0: DefaultMaxPods).
	MaxPods int
	// CPUs is the CPU capacity the node offers the scheduler (0: this
	// host's CPUs); at most the host's.
	CPUs int
	// MemoryMiB is the memory capacity the node offers the scheduler (0:
	// this host's memory less 1 GiB); at most that. Several nodes on one
	// host, or a host shared with other work, give each its share.
	MemoryMiB int64
	// Version is microagent's version, shown as a label.
	Version string
	// Executable runs the workspaces' supervisors (default: this program).
	Executable string
	// Agent is the guest agent binary (empty: the default).
	Agent string
	// MaxLog bounds each pod's log (0: DefaultMaxLog).
	MaxLog int64
}

func (c *Config) maxLog() int64 {
	if c.MaxLog > 0 {
		return c.MaxLog
	}
	return DefaultMaxLog
}

// Run registers the node and serves its pods until ctx ends, then leaves
// the workspaces and their workloads running as they are (the node object
// goes NotReady once its lease lapses; a node started again re-attaches
// to them). At start it first removes the workspaces an earlier run left
// whose pods are no longer bound here (cleanupLeftovers). The kubelet API is served only to clients with certificates
// from ClientCA, each request authorized by the apiserver
// (SubjectAccessReview), as the kubelet's webhook mode does.
func Run(ctx context.Context, cfg Config) error {
	if err := ValidateNodeName(cfg.NodeName); err != nil {
		return err
	}
	_, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen address %q: %w (give host:port)", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return fmt.Errorf("listen address %q needs a port of 1-65535", cfg.Listen)
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	if cfg.Address == "" {
		if cfg.Address, err = routeAddress(restCfg.Host); err != nil {
			return err
		}
	}
	if net.ParseIP(cfg.Address) == nil {
		return fmt.Errorf("node address %q is not an IP address: give the IP the apiserver reaches this host on", cfg.Address)
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	caPEM := restCfg.CAData
	if cfg.ClientCA != "" {
		if caPEM, err = os.ReadFile(cfg.ClientCA); err != nil {
			return fmt.Errorf("client CA: %w", err)
		}
	} else if len(caPEM) == 0 && restCfg.CAFile != "" {
		if caPEM, err = os.ReadFile(restCfg.CAFile); err != nil {
			return fmt.Errorf("kubeconfig's CA: %w", err)
		}
	}
	if len(caPEM) == 0 {
		return errors.New("no client CA for the kubelet API: the kubeconfig names no cluster CA, so give --client-ca FILE (the CA of the apiserver's --kubelet-client-certificate)")
	}
	clientCAs := x509.NewCertPool()
	if !clientCAs.AppendCertsFromPEM(caPEM) {
		return errors.New("client CA: no PEM certificate in it")
	}
	capacity, err := cfg.capacity()
	if err != nil {
		return err
	}
	serving, err := servingCert(cfg)
	if err != nil {
		return err
	}

	eb := record.NewBroadcaster()
	defer eb.Shutdown()
	eb.StartRecordingToSink(&corev1client.EventSinkImpl{Interface: client.CoreV1().Events(corev1.NamespaceAll)})
	recorder := eb.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "microagent-node", Host: cfg.NodeName})
	if _, err := cfg.Home.Ensure(); err != nil {
		return err
	}
	sec, err := listenSecrets(cfg.Home.Path(SecretSocket), func(ctx context.Context, ns, name string) (*corev1.Secret, error) {
		return client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	})
	if err != nil {
		return err
	}
	defer sec.close()
	prov := newProvider(&cfg, recorder, sec)
	if err := prov.cleanupLeftovers(ctx, client); err != nil {
		return err
	}
	defer prov.detach()
	return serve(ctx, &cfg, client, prov, recorder, capacity, port, serving, clientCAs)
}

// routeAddress is this host's source address towards the apiserver at
// server (a URL): a UDP socket connected there, which sends nothing.
func routeAddress(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || u.Hostname() == "" {
		return "", fmt.Errorf("apiserver %q: cannot tell this node's address from it: give --address", server)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	c, err := net.Dial("udp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return "", fmt.Errorf("find this node's address towards %s: %w (give --address)", server, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

// capacity is what the node offers the scheduler: the host's CPUs, its
// memory less memoryReserveMiB and DefaultMaxPods, each unless Config
// gives less. Asking for more than the host has is refused: the scheduler
// would place pods whose workspaces cannot start.
func (c *Config) capacity() (corev1.ResourceList, error) {
	hostCPUs, hostMiB := hostcheck.Capacity()
	hostMiB = max(hostMiB-memoryReserveMiB, 0)
	cpus, memMiB, pods := int64(hostCPUs), hostMiB, int64(DefaultMaxPods)
	switch {
	case c.CPUs < 0 || c.MemoryMiB < 0 || c.MaxPods < 0:
		return nil, fmt.Errorf("node capacity: CPUs %d, memory %d MiB, max pods %d: none may be negative (0 means the default)", c.CPUs, c.MemoryMiB, c.MaxPods)
	case c.CPUs > hostCPUs:
		return nil, fmt.Errorf("node capacity of %d CPUs, but this host has %d: give at most %d", c.CPUs, hostCPUs, hostCPUs)
	case c.MemoryMiB > hostMiB:
		return nil, fmt.Errorf("node capacity of %d MiB, but this host has %d MiB for guests (its memory less %d MiB kept for the host): give at most %d", c.MemoryMiB, hostMiB, memoryReserveMiB, hostMiB)
	}
	if c.CPUs > 0 {
		cpus = int64(c.CPUs)
	}
	if c.MemoryMiB > 0 {
		memMiB = c.MemoryMiB
	}
	if c.MaxPods > 0 {
		pods = int64(c.MaxPods)
	}
	return corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(cpus, resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(memMiB<<20, resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(pods, resource.DecimalSI),
	}, nil
}

// fillNode sets the node's capacity, labels, taint, addresses and info.
func fillNode(n *corev1.Node, cfg *Config, capacity corev1.ResourceList, port int) {
	n.Status.Capacity = capacity.DeepCopy()
	n.Status.Allocatable = capacity.DeepCopy()
	n.Labels[LabelAccelerator] = accelerator()
	n.Labels[LabelVersion] = labelValue(cfg.Version)
	n.Labels[corev1.LabelOSStable] = "linux"
	n.Labels[corev1.LabelArchStable] = "amd64"
	n.Spec.Taints = append(n.Spec.Taints, Taint)
	n.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: cfg.Address},
		{Type: corev1.NodeHostName, Address: cfg.NodeName},
	}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(port)
	n.Status.NodeInfo = corev1.NodeSystemInfo{
		OperatingSystem: "linux", Architecture: "amd64",
		KubeletVersion: "microagent-" + cfg.Version, ContainerRuntimeVersion: "microagent://" + cfg.Version,
	}
}

// accelerator is the VMM's accelerator ("kvm", "tcg"), "unknown" when the
// backend does not say.
func accelerator() string {
	b, err := vmm.Default()
	if err != nil {
		return "unknown"
	}
	id, ok := b.(vmm.Identifier)
	if !ok {
		return "unknown"
	}
	ident, err := id.Identity(vmm.Config{})
	if err != nil || ident.Accel == "" {
		return "unknown"
	}
	return labelValue(ident.Accel)
}

// labelValue makes s a valid label value: at most 63 characters of
// [A-Za-z0-9._-], starting and ending with an alphanumeric.
func labelValue(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	trim := func(c byte) bool { return c == '.' || c == '_' || c == '-' }
	for len(b) > 0 && trim(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && trim(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return string(b)
}

// ValidateNodeName checks a node name: a DNS subdomain of at most 63
// characters (it is also the kubernetes.io/hostname label).
func ValidateNodeName(name string) error {
	ok := len(name) > 0 && len(name) <= 63
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		ok = alnum || ((c == '-' || c == '.') && i > 0 && i < len(name)-1)
	}
	if !ok {
		return fmt.Errorf("invalid node name %q: use 1-63 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit", name)
	}
	return nil
}

// servingCert loads the kubelet API's certificate, or makes a self-signed
// one for the node's address and name, valid for a year.
func servingCert(cfg Config) (tls.Certificate, error) {
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		c, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return c, fmt.Errorf("kubelet API certificate: %w (give both --tls-cert and --tls-key)", err)
		}
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cfg.NodeName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP(cfg.Address)},
		DNSNames:     []string{cfg.NodeName},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// DefaultNodeName is this host's name, lowercased, as a node name ("microagent"
// when it is not a valid one).
func DefaultNodeName() string {
	h, err := os.Hostname()
	h = strings.ToLower(h)
	if err != nil || ValidateNodeName(h) != nil {
		return "microagent"
	}
	return h
}
