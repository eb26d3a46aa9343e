package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/hostcheck"
	"github.com/microagent-dev/microagent/internal/k8stest"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/k8snode"
	"github.com/microagent-dev/microagent/workspace"
)

// k8sFleet is how many pods the fleet measurement runs at once across the
// two nodes, and k8sPodGoal the goal for pod created → Running against
// workspace.Create + Start.
const (
	k8sFleet   = 20
	k8sPodGoal = 1.5
)

// k8sResult is section 12's measurements.
type k8sResult struct {
	skipped string // why the section did not run (no control plane)
	// pod is a pod created → seen Running through a watch, ws
	// workspace.Create + workspace.Start of the same image, interleaved.
	pod, ws []time.Duration
	// podScheduled, podCreated and podStarted are, of pod, the Create
	// call → the scheduler's Scheduled event, → the node's
	// workspace.Create done (its manifest written), and → its Start
	// under way.
	podScheduled, podCreated, podStarted []time.Duration
	// fleet is k8sFleet pods created → all Running; fleetEach each one's
	// created → Running; perNode where they ran; failed the pods that
	// failed instead, with the reason.
	fleet     time.Duration
	fleetEach []time.Duration
	perNode   map[string]int
	failed    []string
	nodeMiB   int64
	fleetMiB  int
}

// k8sSection is section 12: pods through the microagent node.
type k8sSection struct{}

func (k8sSection) usesWorkspaces() {}

func (k8sSection) name() string { return "k8s" }

func (k8sSection) run(ctx context.Context, e *env) error {
	dir := filepath.Join(e.tmp, "k8s")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	logf("k8s: starting a control plane on 127.0.0.1")
	cp, err := k8stest.Launch(dir)
	if errors.Is(err, k8stest.ErrMissing) {
		logf("k8s: skipped: %v", err)
		e.r.k8s = &k8sResult{skipped: err.Error()}
		return nil
	}
	if err != nil {
		return err
	}
	defer cp.Stop()
	e.r.k8s, err = measureK8s(ctx, e, cp)
	return err
}

// measureK8s runs two nodes in this process, each with its own state
// directory (the first is the benchmark's, where the floor's workspaces
// run too) and half the host's memory, then times pods against workspaces
// and a fleet of pods across both.
func measureK8s(ctx context.Context, e *env, cp *k8stest.ControlPlane) (*k8sResult, error) {
	cs, err := cp.NewClient()
	if err != nil {
		return nil, err
	}
	h2, err := freshHome(e.h, e.tmp)
	if err != nil {
		return nil, err
	}
	_, hostMiB := hostcheck.Capacity()
	r := &k8sResult{nodeMiB: (hostMiB - 1024) / 2, fleetMiB: 128, perNode: map[string]int{}}
	homes := []home.Home{e.h, h2}
	names := []string{"bench-n1", "bench-n2"}
	nodeCtx, stopNodes := context.WithCancel(ctx)
	exited := make(chan error, len(homes))
	defer func() {
		stopNodes()
		for range homes {
			<-exited
		}
		// The nodes leave their workspaces; e.cleanupAll takes e.h's.
		removeAll(h2)
	}()
	for i, h := range homes {
		port, err := testenv.FreePort()
		if err != nil {
			return nil, err
		}
		cfg := k8snode.Config{
			Home: h, Kubeconfig: cp.Kubeconfig, NodeName: names[i], Address: "127.0.0.1",
			Listen: fmt.Sprintf("127.0.0.1:%d", port), Executable: e.exe, Agent: e.agent,
			Version: "bench", MemoryMiB: r.nodeMiB,
		}
		go func() { exited <- k8snode.Run(nodeCtx, cfg) }()
	}
	for _, n := range names {
		if err := waitNodeReady(ctx, cs, n, exited); err != nil {
			return nil, err
		}
	}

	// Warm-up, not counted: the image into both nodes' stores, and one
	// workspace start.
	for i, n := range names {
		if _, err := timePod(ctx, cs, e.h, fmt.Sprintf("bench-warm-%d", i), n, e.ref); err != nil {
			return nil, err
		}
	}
	if _, err := timeWorkspace(ctx, e); err != nil {
		return nil, err
	}
	for i := 1; i <= e.opts.n; i++ {
		d, err := timeWorkspace(ctx, e)
		if err != nil {
			return nil, err
		}
		r.ws = append(r.ws, d)
		p, err := timePod(ctx, cs, e.h, fmt.Sprintf("bench-pod-%d", i), names[0], e.ref)
		if err != nil {
			return nil, err
		}
		r.pod = append(r.pod, p.running)
		r.podScheduled = append(r.podScheduled, p.scheduled)
		r.podCreated = append(r.podCreated, p.created)
		r.podStarted = append(r.podStarted, p.started)
		logf("k8s: round %d/%d: workspace create+start %s, pod created → Running %s (scheduled at %s, workspace created at %s, starting at %s)",
			i, e.opts.n, dur(d), dur(p.running), dur(p.scheduled), dur(p.created), dur(p.started))
	}
	if err := runFleet(ctx, cs, e.ref, r); err != nil {
		return nil, err
	}
	logf("k8s: %d pods Running across %v in %s", len(r.fleetEach), r.perNode, dur(r.fleet))
	if err := waitNoWorkspaces(ctx, homes...); err != nil {
		return nil, err
	}
	return r, nil
}

// timeWorkspace is the floor: workspace.Create + workspace.Start of the
// benchmark's image (default profile, as a pod without resources), then
// deleted untimed.
func timeWorkspace(ctx context.Context, e *env) (time.Duration, error) {
	const name = "bench-k8s-floor"
	t := time.Now()
	if err := e.create(ctx, name, ""); err != nil {
		return 0, err
	}
	if _, err := e.start(ctx, name); err != nil {
		return 0, err
	}
	d := time.Since(t)
	if err := workspace.Delete(ctx, e.h, workspace.DeleteOptions{Name: name, Force: true}); err != nil {
		return 0, err
	}
	return d, nil
}

// benchPod is a pod of the image that prints and sleeps, for node (any
// node when empty), tolerating the node's taint.
func benchPod(name, node, ref string, labels map[string]string) *corev1.Pod {
	no, grace := false, int64(1)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyAlways, AutomountServiceAccountToken: &no,
			TerminationGracePeriodSeconds: &grace,
			Tolerations: []corev1.Toleration{{Key: k8snode.Taint.Key, Operator: corev1.TolerationOpEqual,
				Value: k8snode.Taint.Value, Effect: k8snode.Taint.Effect}},
			Containers: []corev1.Container{{Name: "main", Image: ref, Command: []string{"/bin/sh", "-c", "echo up; exec sleep 3600"}}},
		},
	}
	if node != "" {
		p.Spec.NodeSelector = map[string]string{corev1.LabelHostname: node}
	}
	return p
}

// podTimes are one pod's times from its Create call: seen Running,
// scheduled (the scheduler's event), and its workspace's creation and
// start (from the workspace's records).
type podTimes struct{ running, scheduled, created, started time.Duration }

// timePod creates a pod for node and times it to Running (scheduling,
// the node's pull check, workspace create and start, the workload's start
// and the status push to the apiserver and back through a watch), then
// deletes it and waits until its workspace is gone from h (untimed).
func timePod(ctx context.Context, cs kubernetes.Interface, h home.Home, name, node, ref string) (podTimes, error) {
	var pt podTimes
	pods := cs.CoreV1().Pods("default")
	sel := metav1.ListOptions{FieldSelector: "metadata.name=" + name}
	t, running, failed, err := watchRunning(ctx, cs, sel, 1, func() error {
		_, err := pods.Create(ctx, benchPod(name, node, ref, nil), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return pt, err
	}
	if len(failed) > 0 {
		return pt, fmt.Errorf("pod %s: %s", name, failed[0])
	}
	pt.running = running[name]
	infos, err := workspace.List(ctx, h)
	if err != nil {
		return pt, err
	}
	for _, i := range infos {
		if strings.HasPrefix(i.CreatedBy, "k8s:") && strings.Contains(i.Name, name) {
			pt.created, pt.started = i.Created.Sub(t), i.Started.Sub(t)
		}
	}
	evs, err := cs.EventsV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "regarding.name=" + name})
	if err != nil {
		return pt, err
	}
	for _, ev := range evs.Items {
		if ev.Reason == "Scheduled" {
			pt.scheduled = ev.EventTime.Sub(t)
		}
	}
	zero := int64(0)
	if err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		return pt, err
	}
	return pt, waitNoWorkspaces(ctx, h)
}

// runFleet creates k8sFleet small pods for any node and times them to
// all Running, then deletes them.
func runFleet(ctx context.Context, cs kubernetes.Interface, ref string, r *k8sResult) error {
	pods := cs.CoreV1().Pods("default")
	labels := map[string]string{"app": "bench-fleet"}
	_, running, failed, err := watchRunning(ctx, cs, metav1.ListOptions{LabelSelector: "app=bench-fleet"}, k8sFleet, func() error {
		for i := range k8sFleet {
			p := benchPod(fmt.Sprintf("bench-fleet-%02d", i), "", ref, labels)
			p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: *resource.NewQuantity(int64(r.fleetMiB)<<20, resource.BinarySI)}
			if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.failed = failed
	for _, d := range running {
		r.fleetEach = append(r.fleetEach, d)
		r.fleet = max(r.fleet, d)
	}
	l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=bench-fleet"})
	if err != nil {
		return err
	}
	for _, p := range l.Items {
		if _, ok := running[p.Name]; ok {
			r.perNode[p.Spec.NodeName]++
		}
	}
	zero := int64(0)
	return pods.DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{LabelSelector: "app=bench-fleet"})
}

// watchRunning runs create, at start, with a watch on sel already open
// (opening one can take the apiserver 3 s, which is not the pods') and
// returns, by pod name, how long after start each pod was first seen
// Running, once want pods are Running or Failed (failed lists those, with
// their reasons), bounded by 10 minutes.
func watchRunning(ctx context.Context, cs kubernetes.Interface, sel metav1.ListOptions, want int, create func() error) (start time.Time, running map[string]time.Duration, failed []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	running, failedWhy := map[string]time.Duration{}, map[string]string{}
	created := false
	for len(running)+len(failedWhy) < want {
		w, err := cs.CoreV1().Pods("default").Watch(ctx, sel)
		if err != nil {
			return start, nil, nil, fmt.Errorf("watch pods: %w", err)
		}
		if !created {
			created, start = true, time.Now()
			if err := create(); err != nil {
				w.Stop()
				return start, nil, nil, fmt.Errorf("create pods: %w", err)
			}
		}
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			_, seen := running[p.Name]
			switch {
			case seen:
			case p.Status.Phase == corev1.PodRunning:
				running[p.Name] = time.Since(start)
			case p.Status.Phase == corev1.PodFailed:
				failedWhy[p.Name] = p.Status.Reason + ": " + p.Status.Message
			}
			if len(running)+len(failedWhy) >= want {
				break
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return start, nil, nil, fmt.Errorf("%d of %d pods Running within the bound: %w", len(running), want, ctx.Err())
		}
	}
	for n, f := range failedWhy {
		failed = append(failed, n+": "+f)
	}
	sort.Strings(failed)
	return start, running, failed, nil
}

// waitNodeReady waits until node reports Ready, bounded by 2 minutes.
func waitNodeReady(ctx context.Context, cs kubernetes.Interface, node string, exited <-chan error) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("a node exited: %v", err)
		default:
		}
		if n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("node %s not Ready within 2 minutes", node)
}

// waitNoWorkspaces waits until the nodes have deleted every pod's
// workspace in homes, bounded by 3 minutes.
func waitNoWorkspaces(ctx context.Context, homes ...home.Home) error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var left []string
		for _, h := range homes {
			infos, err := workspace.List(ctx, h)
			if err != nil {
				return err
			}
			for _, i := range infos {
				if strings.HasPrefix(i.CreatedBy, "k8s:") {
					left = append(left, i.Name)
				}
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pods deleted, but their workspaces remain after 3 minutes: %s", strings.Join(left, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeAll kills and deletes every workspace of h.
func removeAll(h home.Home) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	infos, _ := workspace.List(ctx, h)
	for _, i := range infos {
		if err := workspace.Delete(ctx, h, workspace.DeleteOptions{Name: i.Name, Force: true}); err != nil {
			logf("k8s: delete workspace %s: %v", i.Name, err)
		}
	}
}

// summary adds section 12 to the summary table.
func (k8sSection) summary(b *report, r *results) {
	k := r.k8s
	if k == nil {
		return
	}
	if k.skipped != "" {
		b.f("| 12. pod created → Running vs `workspace.Create` + `Start` | — | skipped: no control plane | — | — | — | ≤ %.1fx | n/a |\n", k8sPodGoal)
		return
	}
	ws, pod := summarize(k.ws), summarize(k.pod)
	rr := ratio(pod.median, ws.median)
	b.f("| 12. pod created → Running (scheduling, status push) vs `workspace.Create` + `Start` of the same image | %s | %s | %s | %s | — | ≤ %.1fx | %s |\n",
		dur(ws.median), dur(pod.median), x(rr), x(ratio(pod.min, ws.min)), k8sPodGoal, verdict(rr, k8sPodGoal))
	b.f("| 12. %d pods across 2 nodes: created → all Running (%d failed) | — | %s | — | — | — | — | — |\n", k8sFleet, len(k.failed), dur(k.fleet))
}

// report writes section 12.
func (k8sSection) report(b *report, r *results) {
	k := r.k8s
	if k == nil {
		return
	}
	b.f("\n## 12. Kubernetes pods through the microagent node\n\n")
	if k.skipped != "" {
		b.f("Skipped: %s.\n", k.skipped)
		return
	}
	b.f("A control plane (etcd, kube-apiserver, kube-scheduler, kube-controller-manager v%s, as the tests\n", k8stest.Version)
	b.f("start it) on 127.0.0.1 and two nodes (`k8snode.Run` in the harness, each with its own state directory\n")
	b.f("and %d MiB, half the host's memory less 1 GiB). Target: a pod of the busybox image (no resources: the\n", k.nodeMiB)
	b.f("default profile) bound to the first node by a nodeSelector, from the `Create` call until a watch sees it\n")
	b.f("Running: the apiserver, the scheduler, Virtual Kubelet's pod controller, the node's pull check,\n")
	b.f("`workspace.Create` and `Start`, the workload's exec and the status pushed back. Floor: `workspace.Create`\n")
	b.f("+ `workspace.Start` of the same image and profile in the same state directory, call to return\n")
	b.f("(exec-ready). Interleaved round by round after one uncounted round of each; each pod and workspace is\n")
	b.f("deleted before the next.\n\n")
	b.statHeader("Created → ready")
	ws, pod := summarize(k.ws), summarize(k.pod)
	b.statRow("floor: `workspace.Create` + `workspace.Start`", ws)
	b.statRow("**pod created → Running (watch)**", pod)
	b.statRow("  of which `Create` call → Scheduled (the scheduler's event)", summarize(k.podScheduled))
	b.statRow("  of which `Create` call → the workspace's manifest written (Virtual Kubelet, the pull check, `workspace.Create`)", summarize(k.podCreated))
	b.statRow("  of which `Create` call → the node's `workspace.Start` under way", summarize(k.podStarted))
	b.f("\nPod / workspace: **%s** ratio of medians (goal ≤ %.1fx: %s), %s ratio of minima.\n\n",
		x(ratio(pod.median, ws.median)), k8sPodGoal, verdict(ratio(pod.median, ws.median), k8sPodGoal), x(ratio(pod.min, ws.min)))
	b.f("Fleet: %d pods of %d MiB created one after another for any node, timed from the first `Create`\n", k8sFleet, k.fleetMiB)
	b.f("until each is Running (every VM boots at once: the nodes do not queue boots).\n\n")
	b.statHeader("Fleet pod created → Running")
	b.statRow(fmt.Sprintf("each of the %d Running pods", len(k.fleetEach)), summarize(k.fleetEach))
	var nodes []string
	for n, c := range k.perNode {
		nodes = append(nodes, fmt.Sprintf("%s %d", n, c))
	}
	sort.Strings(nodes)
	b.f("\nAll Running after **%s**; placed %s.", dur(k.fleet), strings.Join(nodes, ", "))
	if len(k.failed) > 0 {
		b.f(" %d failed instead: %s.", len(k.failed), strings.Join(k.failed, "; "))
	}
	b.f("\n")
}
