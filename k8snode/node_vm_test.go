package k8snode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/microagent-dev/microagent/internal/k8stest"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/testenv/vmenv"
	"github.com/microagent-dev/microagent/supervisor"
	_ "github.com/microagent-dev/microagent/vmm/qemu"
	"github.com/microagent-dev/microagent/workspace"
)

// TestMain lets the test binary serve as the workspaces' supervisor, and
// as a node process of its own (nodeConfigEnv, see startNodeProcess).
func TestMain(m *testing.M) {
	if js, ok := os.LookupEnv(nodeConfigEnv); ok {
		os.Exit(nodeMain(js))
	}
	if _, ok := supervisor.ParseArgs(os.Args); ok {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := supervisor.Main(ctx, os.Args, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintf(os.Stderr, "microagent: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestPods runs a real control plane and one node with real VMs: a pod's
// output reaches kubectl logs, kubectl exec passes argv, stdin and the exit
// code, kubectl delete halts and deletes the workspace, a two-container
// pod is refused with an event and never created, and kubectl
// port-forward reaches a server on a pod's loopback.
func TestPods(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	e := newNodeEnv(t, "mn1")
	t.Cleanup(e.run(ctx, t))
	cp, cs, h, ref := e.cp, e.cs, e.cfg.Home, e.ref

	t.Run("refused", func(t *testing.T) {
		pod := testPod("two", ref, corev1.RestartPolicyNever, "true")
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "second", Image: ref})
		create(ctx, t, cs, pod)
		p := waitPhase(ctx, t, cs, "two", corev1.PodFailed)
		if p.Status.Reason != ReasonUnsupported || !strings.Contains(p.Status.Message, "2 containers") {
			t.Errorf("status %q %q, want Unsupported naming 2 containers", p.Status.Reason, p.Status.Message)
		}
		waitEvent(ctx, t, cs, "two", ReasonUnsupported)
		if _, err := workspace.Status(ctx, h, workspaceName("default", "two")); !errors.Is(err, workspace.ErrNotFound) {
			t.Errorf("a refused pod has a workspace: %v", err)
		}
	})

	t.Run("logs", func(t *testing.T) {
		start := time.Now()
		create(ctx, t, cs, testPod("hello", ref, corev1.RestartPolicyNever, "echo hello; echo $GREETING >&2"))
		p := waitPhase(ctx, t, cs, "hello", corev1.PodSucceeded)
		t.Logf("pod created to Succeeded: %v", time.Since(start))
		if st := p.Status.ContainerStatuses; len(st) != 1 || st[0].State.Terminated == nil || st[0].State.Terminated.ExitCode != 0 {
			t.Errorf("container status %+v, want terminated with 0", st)
		}
		out, err := cp.RunKubectl(ctx, nil, "logs", "hello")
		if err != nil || out != "hello\nhi there\n" {
			t.Errorf("kubectl logs = %q, %v; want hello and the env value", out, err)
		}
	})

	t.Run("exec-delete", func(t *testing.T) {
		start := time.Now()
		create(ctx, t, cs, testPod("long", ref, corev1.RestartPolicyNever, "echo up; exec sleep 3600"))
		waitPhase(ctx, t, cs, "long", corev1.PodRunning)
		t.Logf("pod created to Running: %v", time.Since(start))
		out, err := cp.RunKubectl(ctx, nil, "exec", "long", "--", "sh", "-c", `echo "$0 $1" "$(pwd)"; exit 7`, "a b", "c")
		var ke *k8stest.KubectlError
		if !errors.As(err, &ke) || ke.Code != 7 || out != "a b c /tmp\n" {
			t.Errorf("kubectl exec = %q, %v; want argv and workingDir echoed, exit 7", out, err)
		}
		out, err = cp.RunKubectl(ctx, []byte("from stdin"), "exec", "-i", "long", "--", "cat")
		if err != nil || out != "from stdin" {
			t.Errorf("kubectl exec -i cat = %q, %v", out, err)
		}
		out, err = cp.RunKubectl(ctx, nil, "logs", "long")
		if err != nil || out != "up\n" {
			t.Errorf("kubectl logs long = %q, %v", out, err)
		}
		ws := workspaceName("default", "long")
		if info, err := workspace.Status(ctx, h, ws); err != nil || info.State != workspace.Running || info.CreatedBy != "k8s:mn1" {
			t.Fatalf("workspace %s: %+v, %v; want running, created by k8s:mn1", ws, info, err)
		}
		start = time.Now()
		if _, err := cp.RunKubectl(ctx, nil, "delete", "pod", "long", "--grace-period=5", "--wait=true"); err != nil {
			t.Fatal(err)
		}
		t.Logf("kubectl delete took %v", time.Since(start))
		if _, err := workspace.Status(ctx, h, ws); !errors.Is(err, workspace.ErrNotFound) {
			t.Errorf("workspace %s after kubectl delete: %v, want not found", ws, err)
		}
	})
	t.Run("port-forward", func(t *testing.T) { testPortForward(ctx, t, cp, cs, ref) })

	t.Run("host-port", func(t *testing.T) {
		hp := testenv.MustFreePort(t)
		pod := testPod("hostport", ref, corev1.RestartPolicyNever, "mkdir -p /www && echo published > /www/x && exec httpd -f -p 8081 -h /www")
		pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8081, HostPort: int32(hp)}, {ContainerPort: 9000}}
		create(ctx, t, cs, pod)
		waitPhase(ctx, t, cs, "hostport", corev1.PodRunning)
		// Published on the node's address (127.0.0.1 here).
		t.Logf("page through the host port after %v", testenv.Fetch(t, fmt.Sprintf("http://127.0.0.1:%d/x", hp), "published\n"))
		if _, err := cp.RunKubectl(ctx, nil, "delete", "pod", "hostport", "--grace-period=5", "--wait=true"); err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", hp))
		if err != nil {
			t.Fatalf("host port still held after the pod's deletion: %v", err)
		}
		l.Close()
	})
}

// nodeEnv is a control plane, a registry serving busybox and the Config of
// one node run in this process with real VMs; the node's live
// workspaces are killed when the test ends.
type nodeEnv struct {
	cp  *k8stest.ControlPlane
	cs  kubernetes.Interface
	ref string
	cfg Config
}

func newNodeEnv(t *testing.T, name string) *nodeEnv {
	t.Helper()
	cp := k8stest.Start(t)
	h := vmenv.VMHome(t)
	reg := testenv.StartRegistry(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		infos, _ := workspace.List(context.Background(), h)
		for _, i := range infos {
			if i.State.Live() {
				workspace.Kill(context.Background(), h, i.Name)
			}
		}
	})
	return &nodeEnv{cp: cp, cs: cp.Client(t), ref: reg.PushBusybox(t, "busybox"), cfg: Config{
		Home: h, Kubeconfig: cp.Kubeconfig, NodeName: name, Address: "127.0.0.1",
		Listen: fmt.Sprintf("127.0.0.1:%d", testenv.MustFreePort(t)), Executable: exe, Agent: vmenv.Agent(t), Version: "test",
	}}
}

// run runs the node until the returned stop is called, once it is Ready.
func (e *nodeEnv) run(ctx context.Context, t *testing.T) (stop func()) {
	t.Helper()
	nctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(nctx, e.cfg) }()
	nodeReady(ctx, t, e.cs, e.cfg.NodeName, done)
	return func() { cancel(); <-done }
}

func testPod(name, ref string, restart corev1.RestartPolicy, script string) *corev1.Pod {
	no := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy:                restart,
			AutomountServiceAccountToken: &no,
			Tolerations:                  []corev1.Toleration{{Key: Taint.Key, Operator: corev1.TolerationOpEqual, Value: Taint.Value, Effect: Taint.Effect}},
			Containers: []corev1.Container{{
				Name: "main", Image: ref, Command: []string{"/bin/sh", "-c"}, Args: []string{script}, WorkingDir: "/tmp",
				Env: []corev1.EnvVar{{Name: "GREETING", Value: "hi there"}},
			}},
		},
	}
}

func create(ctx context.Context, t *testing.T, cs kubernetes.Interface, pod *corev1.Pod) {
	t.Helper()
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// poll calls fn every 200 ms until it returns true, bounded by 5 minutes
// (a TCG boot on a loaded machine).
func poll(ctx context.Context, t *testing.T, what string, fn func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		ok, last := fn()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within the time limit; last: %s", what, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func nodeReady(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string, done <-chan error) {
	t.Helper()
	poll(ctx, t, "node "+name+" Ready", func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("node exited: %v", err)
		default:
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				if n.Labels[LabelAccelerator] == "" || len(n.Spec.Taints) == 0 || n.Status.Capacity.Cpu().IsZero() {
					t.Errorf("node %s: labels %v, taints %v, capacity %v", name, n.Labels, n.Spec.Taints, n.Status.Capacity)
				}
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", n.Status.Conditions)
	})
}

func waitPhase(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string, want corev1.PodPhase) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	poll(ctx, t, "pod "+name+" "+string(want), func() (bool, string) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || err != nil {
			return false, fmt.Sprint(err)
		}
		pod = p
		if p.Status.Phase != want && (p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded) {
			t.Fatalf("pod %s ended %s (%s: %s; %+v), want %s", name, p.Status.Phase, p.Status.Reason, p.Status.Message, p.Status.ContainerStatuses, want)
		}
		return p.Status.Phase == want, fmt.Sprintf("%s %s %+v", p.Status.Phase, p.Status.Message, p.Status.ContainerStatuses)
	})
	return pod
}

func waitEvent(ctx context.Context, t *testing.T, cs kubernetes.Interface, pod, reason string) {
	t.Helper()
	poll(ctx, t, "event "+reason+" on "+pod, func() (bool, string) {
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			if e.Reason == reason {
				return true, ""
			}
			seen = append(seen, e.Reason)
		}
		return false, strings.Join(seen, ",")
	})
}
