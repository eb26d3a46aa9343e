// Package k8stest starts a real Kubernetes control plane on 127.0.0.1 for
// tests: etcd, kube-apiserver, kube-scheduler and kube-controller-manager,
// each a child process of the test with its state in a temporary folder,
// certificates and keys generated for that one plane, and an admin
// kubeconfig written beside them.
//
// etcd comes from Debian (etcd-server); the Kubernetes binaries and kubectl
// are built by scripts/install-k8s.sh into a cache outside the repository
// (see BinDir). Without them, tests that call Start are skipped, except
// under CI=true, where they fail.
package k8stest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/microagent-dev/microagent/internal/testenv"
)

// Version is the Kubernetes release scripts/install-k8s.sh builds.
const Version = "1.37.2"

// Binaries are the programs BinDir holds.
var Binaries = []string{"kube-apiserver", "kube-scheduler", "kube-controller-manager", "kubectl"}

// NodeMonitorGracePeriod is the controller-manager's: how long after a
// node's last heartbeat (lease renewal) it is marked NotReady and tainted
// unreachable, so that its pods are evicted (after their tolerationSeconds).
const NodeMonitorGracePeriod = 20 * time.Second

// readyTimeout bounds each component's wait to be ready; the apiserver
// needs ~3.5 s alone, much more on a loaded 2-core machine.
const readyTimeout = 90 * time.Second

// BinDir returns install-k8s.sh's folder holding every one of Binaries for
// Version, or "" when there is none.
func BinDir() string {
	for _, d := range testenv.ToolCacheDirs("k8s") {
		dir := filepath.Join(d, "v"+Version)
		ok := true
		for _, b := range Binaries {
			if testenv.LookTool(filepath.Join(dir, b)) == "" {
				ok = false
				break
			}
		}
		if ok {
			return dir
		}
	}
	return ""
}

// ControlPlane is a running control plane private to one test.
type ControlPlane struct {
	// Dir holds the certificates, the kubeconfig and etcd's data.
	Dir string
	// Kubeconfig is an admin (system:masters) kubeconfig for the plane.
	Kubeconfig string
	// Server is the apiserver's URL, https://127.0.0.1:PORT.
	Server string
	// CAFile is the cluster CA, which also signs every client certificate,
	// the apiserver's one for kubelets included.
	CAFile string
	// Kubectl is the kubectl binary built with the plane.
	Kubectl string
	// KubeletClientCert and KubeletClientKey are the apiserver's client
	// certificate towards kubelets (system:masters).
	KubeletClientCert, KubeletClientKey string
	// EveCert and EveKey are a client certificate from the cluster CA for
	// user "eve", whom no RBAC rule grants anything: an attacker with a
	// valid certificate.
	EveCert, EveKey string

	procs []*testenv.Process // start order: etcd first
}

// Start starts a control plane on free loopback ports, waits until the
// apiserver is ready and the default service account exists (the
// controller-manager is then working), and stops it when the test ends.
func Start(t testing.TB) *ControlPlane {
	t.Helper()
	etcd := testenv.LookTool("etcd")
	if etcd == "" {
		testenv.SkipOrFail(t, "etcd not found: install it with `apt-get install -y --no-install-recommends etcd-server` (or run scripts/install-k8s.sh)")
	}
	bins := BinDir()
	if bins == "" {
		testenv.SkipOrFail(t, "Kubernetes v%s binaries not found: build them with scripts/install-k8s.sh (~6 min, once) or set MICROAGENT_K8S_CACHE", Version)
	}
	return testenv.StartRetried(t, "kubernetes control plane", func() (*ControlPlane, error) {
		return start(t.TempDir(), etcd, bins)
	})
}

// ErrMissing is Launch's error when etcd or the Kubernetes binaries are
// not installed.
var ErrMissing = errors.New("the control plane is not installed: run scripts/install-k8s.sh (~6 min, once) or set MICROAGENT_K8S_CACHE")

// Launch starts a control plane as Start does, for a program that is not
// a test (the benchmark): its state goes into dir, an empty folder, and
// the caller stops it. It fails with ErrMissing when the binaries are not
// installed.
func Launch(dir string) (*ControlPlane, error) {
	etcd, bins := testenv.LookTool("etcd"), BinDir()
	if etcd == "" || bins == "" {
		return nil, fmt.Errorf("%w (etcd: %q, Kubernetes v%s: %q)", ErrMissing, etcd, Version, bins)
	}
	return start(dir, etcd, bins)
}

func start(dir, etcdBin, bins string) (_ *ControlPlane, err error) {
	cp := &ControlPlane{Dir: dir, CAFile: filepath.Join(dir, "ca.crt"), Kubectl: filepath.Join(bins, "kubectl"),
		KubeletClientCert: filepath.Join(dir, "kubelet-client.crt"), KubeletClientKey: filepath.Join(dir, "kubelet-client.key"),
		EveCert: filepath.Join(dir, "eve.crt"), EveKey: filepath.Join(dir, "eve.key")}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()
	ports := make([]int, 3)
	for i := range ports {
		if ports[i], err = testenv.FreePort(); err != nil {
			return nil, err
		}
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	cp.Server = fmt.Sprintf("https://127.0.0.1:%d", ports[2])

	files, err := writeCerts(dir)
	if err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	cp.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := writeKubeconfig(cp.Kubeconfig, cp.Server, files["ca.crt"], files["admin.crt"], files["admin.key"]); err != nil {
		return nil, err
	}
	p := func(name string) string { return filepath.Join(dir, name) }

	etcd, err := cp.run("etcd", etcdBin,
		"--name=default", "--data-dir="+p("etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL, "--log-level=warn")
	if err != nil {
		return nil, err
	}
	if err := testenv.WaitHTTP(etcdURL+"/health", 2*time.Second, readyTimeout, etcd.Exited()); err != nil {
		return nil, fmt.Errorf("etcd on %s not ready (%v): %s", etcdURL, err, tail(etcd.Output()))
	}

	// --endpoint-reconciler-type=none: with a loopback advertise address
	// the default reconciler refuses to start (DESIGN.md section 10).
	api, err := cp.run("kube-apiserver", filepath.Join(bins, "kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", ports[2]),
		"--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
		"--cert-dir="+p("apiserver-certs"),
		"--tls-cert-file="+p("apiserver.crt"), "--tls-private-key-file="+p("apiserver.key"),
		"--client-ca-file="+p("ca.crt"),
		"--kubelet-client-certificate="+p("kubelet-client.crt"), "--kubelet-client-key="+p("kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+p("sa.pub"), "--service-account-signing-key-file="+p("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/24",
		"--authorization-mode=Node,RBAC",
		"--profiling=false", "--v=0")
	if err != nil {
		return nil, err
	}
	if err := cp.waitReady(api); err != nil {
		return nil, err
	}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"kube-scheduler", []string{"--kubeconfig=" + cp.Kubeconfig, "--leader-elect=false",
			"--bind-address=127.0.0.1", "--secure-port=0"}},
		// A node is NotReady NodeMonitorGracePeriod after its lease was
		// last renewed (default 50 s; nodes renew every 10 s), so that
		// rescheduling tests need not wait a minute.
		{"kube-controller-manager", []string{"--kubeconfig=" + cp.Kubeconfig, "--leader-elect=false",
			"--bind-address=127.0.0.1", "--secure-port=0", "--use-service-account-credentials=false",
			"--service-account-private-key-file=" + p("sa.key"), "--root-ca-file=" + p("ca.crt"),
			"--node-monitor-period=2s", "--node-monitor-grace-period=" + NodeMonitorGracePeriod.String()}},
	} {
		if _, err := cp.run(c.name, filepath.Join(bins, c.name), append(c.args, "--profiling=false")...); err != nil {
			return nil, err
		}
	}
	if err := cp.waitServiceAccount(); err != nil {
		return nil, err
	}
	return cp, nil
}

// run starts one component with its output collected, in the plane's
// folder, with only PATH of the test's environment.
func (cp *ControlPlane) run(name, bin string, args ...string) (*testenv.Process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = cp.Dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + cp.Dir}
	p, err := testenv.StartProcess(cmd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cp.procs = append(cp.procs, p)
	return p, nil
}

// waitReady polls the apiserver's /readyz through kubectl's client until it
// answers ok, the apiserver exits, or readyTimeout passes.
func (cp *ControlPlane) waitReady(api *testenv.Process) error {
	cs, err := cp.clientset()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-api.Exited():
			return fmt.Errorf("kube-apiserver exited before it was ready: %s", tail(api.Output()))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var body []byte
		body, last = cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		cancel()
		if last == nil && string(body) == "ok" {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver on %s not ready within %v (last error %v): %s", cp.Server, readyTimeout, last, tail(api.Output()))
}

// waitServiceAccount waits for the "default" service account of the
// default namespace: the controller-manager makes it, and pods wait on it.
func (cp *ControlPlane) waitServiceAccount() error {
	cs, err := cp.clientset()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		for _, p := range cp.procs {
			select {
			case <-p.Exited():
				return fmt.Errorf("a control-plane process exited: %s", tail(p.Output()))
			default:
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, last = cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("no default service account within %v (is kube-controller-manager working?): %v: %s",
		readyTimeout, last, tail(cp.procs[len(cp.procs)-1].Output()))
}

// Client returns a clientset for the plane with admin rights.
func (cp *ControlPlane) Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := cp.clientset()
	if err != nil {
		t.Fatalf("kubernetes client: %v", err)
	}
	return cs
}

// NewClient is Client for a program that is not a test (Launch's caller).
func (cp *ControlPlane) NewClient() (kubernetes.Interface, error) { return cp.clientset() }

func (cp *ControlPlane) clientset() (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", cp.Kubeconfig, err)
	}
	return kubernetes.NewForConfig(cfg)
}

// RunKubectl runs kubectl against the plane with stdin (may be nil) and
// returns its stdout; a non-zero exit returns an error quoting stderr.
func (cp *ControlPlane) RunKubectl(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, cp.Kubectl, append([]string{"--kubeconfig=" + cp.Kubeconfig}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + cp.Dir}
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out.String(), &KubectlError{Args: args, Code: ee.ExitCode(), Stderr: strings.TrimSpace(errb.String())}
		}
		return out.String(), err
	}
	return out.String(), nil
}

// KubectlError is RunKubectl's error for a kubectl that exited non-zero.
type KubectlError struct {
	Args   []string
	Code   int
	Stderr string
}

func (e *KubectlError) Error() string {
	return fmt.Sprintf("kubectl %s: exit %d: %s", strings.Join(e.Args, " "), e.Code, e.Stderr)
}

// Stop kills the components, the apiserver before etcd (it takes ~66 s to
// stop on SIGTERM, so it is killed outright). Stopping twice is fine.
func (cp *ControlPlane) Stop() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		cp.procs[i].Stop()
	}
}

// writeCerts makes the plane's CA and certificates in dir and returns
// their PEM bytes by file name.
func writeCerts(dir string) (map[string][]byte, error) {
	c, err := newCA()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{"ca.crt": c.pem}
	for _, l := range []struct {
		name, cn string
		orgs     []string
		ips      []net.IP
		dns      []string
	}{
		{"apiserver", "kube-apiserver", nil,
			[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
			[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}},
		{"admin", "admin", []string{"system:masters"}, nil, nil},
		{"kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil},
		{"eve", "eve", nil, nil, nil},
	} {
		crt, key, err := c.issue(l.cn, l.orgs, l.ips, l.dns)
		if err != nil {
			return nil, err
		}
		files[l.name+".crt"], files[l.name+".key"] = crt, key
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	if err := serviceAccountKeys(dir); err != nil {
		return nil, err
	}
	return files, nil
}

// writeKubeconfig writes a kubeconfig with the certificates embedded.
func writeKubeconfig(path, server string, ca, crt, key []byte) error {
	b64 := base64.StdEncoding.EncodeToString
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: test
  context:
    cluster: test
    user: admin
current-context: test
`, server, b64(ca), b64(crt), b64(key))
	return os.WriteFile(path, []byte(doc), 0o600)
}

func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 3000 {
		s = "..." + s[len(s)-3000:]
	}
	return s
}
