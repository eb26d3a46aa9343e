package k8snode

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/k8stest"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/testenv/vmenv"
	"github.com/microagent-dev/microagent/workspace"
)

// nodeConfigEnv, when set, makes the test binary a node process: its
// value is the Config as JSON (no secrets: paths and names).
const nodeConfigEnv = "MICROAGENT_TEST_NODE_CONFIG"

// nodeMain runs one node until SIGTERM or SIGINT, as microagent-node does.
func nodeMain(js string) int {
	var cfg Config
	if err := json.Unmarshal([]byte(js), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "node config: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "microagent: %v\n", err)
		return 1
	}
	return 0
}

// testNode is one node process playing a host of its own: its own state
// directory, capacity and kubelet port.
type testNode struct {
	cfg  Config
	proc *testenv.Process
	done chan error // the process's exit, for nodeReady
}

// start runs the node as a new process of the test binary (which also
// serves as its workspaces' supervisor), killed when the test ends.
func (n *testNode) start(t *testing.T) {
	t.Helper()
	js, err := json.Marshal(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(n.cfg.Executable, "-test.run=^$")
	cmd.Env = []string{nodeConfigEnv + "=" + string(js), "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir()}
	// As make test runs it: the agent and the network helper beside it
	// (the supervisors find the helper through the node's environment).
	for _, k := range []string{"MICROAGENT_ACCEL", "MICROAGENT_AGENT", "MICROAGENT_NET"} {
		if v, ok := os.LookupEnv(k); ok {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	p, err := testenv.StartProcess(cmd)
	if err != nil {
		t.Fatal(err)
	}
	n.proc, n.done = p, make(chan error, 1)
	go func() {
		<-p.Exited()
		n.done <- fmt.Errorf("node %s exited: %s", n.cfg.NodeName, p.Output())
	}()
	t.Cleanup(p.Stop)
}

// TestMultiNode runs two node processes with separate state directories
// against one control plane, each with room for two 128 MiB pods: a
// Deployment of 4 spreads 2 and 2; a pod larger than either node stays
// Pending with the scheduler's reason; a node killed with SIGKILL goes
// NotReady and its pods are rescheduled onto the other; restarted, it
// kills and deletes the workspaces of the pods it lost and re-attaches to the
// one pod still bound to it, leaving no other VM of its state directory.
func TestMultiNode(t *testing.T) {
	cp := k8stest.Start(t)
	reg := testenv.StartRegistry(t)
	ref := reg.PushBusybox(t, "busybox")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	agent := vmenv.Agent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	cs := cp.Client(t)
	nodes := map[string]*testNode{}
	names := []string{"na", "nb"}
	for _, name := range names {
		n := &testNode{cfg: Config{
			Home: vmenv.VMHome(t), Kubeconfig: cp.Kubeconfig, NodeName: name, Address: "127.0.0.1",
			Listen: fmt.Sprintf("127.0.0.1:%d", testenv.MustFreePort(t)), Executable: exe, Agent: agent,
			Version: "test", MemoryMiB: 320, MaxPods: 8,
		}}
		nodes[name] = n
		t.Cleanup(func() { killAll(n.cfg) }) // after the node is stopped
		n.start(t)
	}
	for _, name := range names {
		nodeReady(ctx, t, cs, name, nodes[name].done)
	}
	began := time.Now()

	dep := spreadDeployment(ref, 4)
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	huge := testPod("huge", ref, corev1.RestartPolicyNever, "true")
	huge.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")}
	create(ctx, t, cs, huge)

	t.Run("spread", func(t *testing.T) {
		pods := waitDeployment(ctx, t, cs, 4, nil)
		t.Logf("4 replicas Running on 2 nodes: %v after the nodes were Ready", time.Since(began))
		if got := perNode(pods); got["na"] != 2 || got["nb"] != 2 {
			t.Errorf("pods per node %v, want 2 on each (room for 2 each)", got)
		}
		for _, name := range names {
			if infos := liveWorkspaces(ctx, t, nodes[name].cfg); len(infos) != 2 {
				t.Errorf("node %s runs %d workspaces, want 2", name, len(infos))
			}
		}
	})

	t.Run("too-big", func(t *testing.T) {
		// The scheduler retries: an early attempt may name another
		// reason (a node's not-ready taint not yet lifted).
		waitEventMessage(ctx, t, cs, "huge", "FailedScheduling", "Insufficient memory")
		p, err := cs.CoreV1().Pods("default").Get(ctx, "huge", metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" {
			t.Errorf("pod huge: %v, %v; want Pending and unbound", p.Status.Phase, err)
		}
		zero := int64(0)
		if err := cs.CoreV1().Pods("default").Delete(ctx, "huge", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Error(err)
		}
	})
	if t.Failed() {
		return
	}

	// Two replicas: whichever node holds them, the other has room for
	// those of the one killed.
	scale := []byte(`{"spec":{"replicas":2}}`)
	if _, err := cs.AppsV1().Deployments("default").Patch(ctx, "spread", types.MergePatchType, scale, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := waitDeployment(ctx, t, cs, 2, nil)
	per := perNode(pods)
	victim, other := "na", "nb"
	if per["na"] == 0 {
		victim, other = "nb", "na"
	}
	v := nodes[victim]
	// A pod bound to the victim that tolerates its loss for good: its
	// workload runs on in its workspace, and the restarted node must
	// re-attach to it.
	stay := testPod("stay", ref, corev1.RestartPolicyAlways, "echo stay; exec sleep 3600")
	stay.Spec.NodeName = victim
	stay.Spec.Tolerations = append(stay.Spec.Tolerations,
		corev1.Toleration{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
		corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute})
	create(ctx, t, cs, stay)
	waitPhase(ctx, t, cs, "stay", corev1.PodRunning)
	if live := liveWorkspaces(ctx, t, v.cfg); len(live) != per[victim]+1 {
		t.Fatalf("node %s runs %d workspaces, want %d", victim, len(live), per[victim]+1)
	}
	stayWS, err := workspace.Status(ctx, v.cfg.Home, workspaceName("default", "stay"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("reschedule", func(t *testing.T) {
		killed := time.Now()
		v.proc.Stop() // SIGKILL: its VMs run on, as on a host cut off
		poll(ctx, t, "node "+victim+" NotReady", func() (bool, string) {
			n, err := cs.CoreV1().Nodes().Get(ctx, victim, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					return c.Status != corev1.ConditionTrue, string(c.Status)
				}
			}
			return false, "no Ready condition"
		})
		t.Logf("node %s NotReady %v after SIGKILL", victim, time.Since(killed))
		pods := waitDeployment(ctx, t, cs, 2, func(p *corev1.Pod) bool { return p.Spec.NodeName == other })
		t.Logf("both replicas Running on %s %v after SIGKILL", other, time.Since(killed))
		if got := perNode(pods); got[other] != 2 {
			t.Errorf("pods per node %v, want both on %s", got, other)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("restart-cleans-up", func(t *testing.T) {
		restarted := time.Now()
		v.start(t)
		nodeReady(ctx, t, cs, victim, v.done)
		waitEvent(ctx, t, cs, "stay", ReasonReattached)
		p := waitPhase(ctx, t, cs, "stay", corev1.PodRunning)
		t.Logf("pod stay re-attached %v after the restart", time.Since(restarted))
		if p.Spec.NodeName != victim {
			t.Errorf("pod stay on %q, want %s", p.Spec.NodeName, victim)
		}
		if st := p.Status.ContainerStatuses; len(st) != 1 || st[0].RestartCount != 0 || st[0].State.Running == nil {
			t.Errorf("pod stay after the re-attach: %+v, want running, no restart", st)
		}
		if ws, err := workspace.Status(ctx, v.cfg.Home, stayWS.Name); err != nil || ws.VMMPID != stayWS.VMMPID {
			t.Errorf("pod stay's workspace after the restart: %+v %v, want the same VM (pid %d)", ws, err, stayWS.VMMPID)
		}
		// The evicted pods' objects go too, once the node confirms.
		poll(ctx, t, "evicted pods deleted", func() (bool, string) {
			l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=spread"})
			if err != nil {
				return false, err.Error()
			}
			var left []string
			for _, p := range l.Items {
				if p.Spec.NodeName == victim {
					left = append(left, p.Name)
				}
			}
			return len(left) == 0, strings.Join(left, ",")
		})
		infos, err := workspace.List(ctx, v.cfg.Home)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, i := range infos {
			got = append(got, i.Name+" "+string(i.State))
		}
		if want := []string{workspaceName("default", "stay") + " " + string(workspace.Running)}; !slices.Equal(got, want) {
			t.Errorf("node %s's workspaces after the restart: %v, want only %v", victim, got, want)
		}
		if q := qemuOf(v.cfg.Home); len(q) != 1 {
			t.Errorf("QEMU processes of %s's state directory, by workspace: %q, want only the re-attached pod's", victim, q)
		}
	})
}

// spreadDeployment is n replicas of a 128 MiB busybox sleeping, evicted 2 s
// after their node is lost and given 2 s to stop.
func spreadDeployment(ref string, n int32) *appsv1.Deployment {
	tmpl := testPod("", ref, corev1.RestartPolicyAlways, "echo up; exec sleep 3600")
	grace, evict := int64(2), int64(2)
	tmpl.Spec.TerminationGracePeriodSeconds = &grace
	tmpl.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}
	for _, key := range []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable} {
		tmpl.Spec.Tolerations = append(tmpl.Spec.Tolerations, corev1.Toleration{
			Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &evict})
	}
	labels := map[string]string{"app": "spread"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "spread"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &n,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: tmpl.Spec},
		},
	}
}

// waitDeployment waits until the spread Deployment has exactly n pods not
// being deleted, every one Running and Ready (and matching ok, when given),
// and returns them.
func waitDeployment(ctx context.Context, t *testing.T, cs kubernetes.Interface, n int, ok func(*corev1.Pod) bool) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	poll(ctx, t, fmt.Sprintf("%d spread pods Running", n), func() (bool, string) {
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=spread"})
		if err != nil {
			return false, err.Error()
		}
		pods = pods[:0]
		var seen []string
		for _, p := range l.Items {
			seen = append(seen, fmt.Sprintf("%s@%s:%s/%v", p.Name, p.Spec.NodeName, p.Status.Phase, p.DeletionTimestamp != nil))
			if p.DeletionTimestamp == nil {
				pods = append(pods, p)
			}
		}
		for _, p := range pods {
			if p.Status.Phase == corev1.PodFailed {
				t.Fatalf("pod %s on %s failed: %s: %s", p.Name, p.Spec.NodeName, p.Status.Reason, p.Status.Message)
			}
			if p.Status.Phase != corev1.PodRunning || !podReady(&p) || (ok != nil && !ok(&p)) {
				return false, strings.Join(seen, " ")
			}
		}
		// Pods being deleted count until they are gone, unless ok says
		// which pods matter (those on a lost node stay until it returns).
		return len(pods) == n && (ok != nil || len(l.Items) == n), strings.Join(seen, " ")
	})
	return pods
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func perNode(pods []corev1.Pod) map[string]int {
	m := map[string]int{}
	for _, p := range pods {
		m[p.Spec.NodeName]++
	}
	return m
}

// waitEventMessage waits for an event of reason on pod whose message says
// want.
func waitEventMessage(ctx context.Context, t *testing.T, cs kubernetes.Interface, pod, reason, want string) {
	t.Helper()
	poll(ctx, t, "event "+reason+" on "+pod+" saying "+want, func() (bool, string) {
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			if e.Reason == reason && strings.Contains(e.Message, want) {
				return true, ""
			}
			seen = append(seen, e.Reason+": "+e.Message)
		}
		return false, strings.Join(seen, "; ")
	})
}

// liveWorkspaces lists a node's live workspaces.
func liveWorkspaces(ctx context.Context, t *testing.T, cfg Config) []*workspace.Info {
	t.Helper()
	infos, err := workspace.List(ctx, cfg.Home)
	if err != nil {
		t.Fatal(err)
	}
	var live []*workspace.Info
	for _, i := range infos {
		if i.State.Live() {
			live = append(live, i)
		}
	}
	return live
}

// killAll kills every live workspace of a node's state directory: the
// node leaves them running when it stops.
func killAll(cfg Config) {
	ctx := context.Background()
	infos, _ := workspace.List(ctx, cfg.Home)
	for _, i := range infos {
		if i.State.Live() {
			_, _ = workspace.Kill(ctx, cfg.Home, i.Name)
		}
	}
}

// qemuOf lists the running QEMU processes whose arguments name a path
// under root, each by the workspace whose disk it has open.
func qemuOf(h home.Home) []string {
	root := h.Root
	var out []string
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(root+"/")) {
			continue
		}
		if argv0, _, _ := bytes.Cut(b, []byte{0}); !strings.HasPrefix(filepath.Base(string(argv0)), "qemu-system") {
			continue
		}
		if st, err := os.ReadFile(filepath.Join(filepath.Dir(p), "stat")); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
				continue // exited, not yet reaped
			}
		}
		ws := "?"
		if _, rest, ok := bytes.Cut(b, []byte(h.Path(workspace.Dir)+"/")); ok {
			ws, _, _ = strings.Cut(string(rest), "/")
		}
		out = append(out, ws)
	}
	return out
}
