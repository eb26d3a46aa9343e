package k8snode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	utilexec "k8s.io/utils/exec"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/workspace"
)

// Event reasons this node records on pods, besides Virtual Kubelet's own.
const (
	ReasonUnsupported = "Unsupported"
	ReasonPullFailed  = "ErrImagePull"
	ReasonBootFailed  = "BootFailed"
	ReasonStarted     = "Started"
	ReasonBackOff     = "BackOff"
	ReasonReattached  = "Reattached"
	// ReasonSecret: a Secret the pod needs is missing or unreadable, or
	// its delivery is not possible as asked.
	ReasonSecret = "SecretUnavailable"
)

// Restart backoff, as the kubelet's: 10 s doubling to 5 min, reset after a
// run of 10 min.
const (
	backoffStart = 10 * time.Second
	backoffMax   = 5 * time.Minute
	backoffReset = 10 * time.Minute
)

// provider runs each pod bound to the node as one workspace.
type provider struct {
	cfg      *Config
	recorder record.EventRecorder
	secrets  *secretServer

	mu     sync.Mutex
	pods   map[string]*podRun // by namespace/name
	notify func(*corev1.Pod)
}

// podRun is one pod's workspace and workload. pod (status included) is
// guarded by provider.mu and replaced, never changed in place, since
// Virtual Kubelet reads what GetPod returns concurrently.
type podRun struct {
	pod *corev1.Pod
	// reported is the status the apiserver had when the pod came to this
	// process.
	reported corev1.PodStatus
	ws       string
	log      string
	plan     *plan
	cancel   context.CancelFunc
	done     chan struct{}
	deleting bool
}

func newProvider(cfg *Config, recorder record.EventRecorder, sec *secretServer) *provider {
	return &provider{cfg: cfg, recorder: recorder, secrets: sec, pods: map[string]*podRun{}}
}

func key(namespace, name string) string { return namespace + "/" + name }

// NotifyPods registers Virtual Kubelet's status callback.
func (p *provider) NotifyPods(_ context.Context, f func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = f
	p.mu.Unlock()
}

// update applies fn to a copy of the pod's status and pushes the result.
func (p *provider) update(r *podRun, fn func(*corev1.PodStatus)) {
	p.mu.Lock()
	pod := r.pod.DeepCopy()
	fn(&pod.Status)
	r.pod = pod
	notify := p.notify
	p.mu.Unlock()
	if notify != nil {
		notify(pod.DeepCopy())
	}
}

// CreatePod starts the pod's workspace in the background; its status is
// pushed as it goes. A pod the node cannot run is refused here: an event
// and a Failed status, nothing created.
func (p *provider) CreatePod(ctx context.Context, pod *corev1.Pod) error {
	k := key(pod.Namespace, pod.Name)
	p.mu.Lock()
	if _, ok := p.pods[k]; ok {
		p.mu.Unlock()
		return nil
	}
	ws := workspaceName(pod.Namespace, pod.Name)
	pod = pod.DeepCopy()
	reported := pod.Status // what an earlier node process said, for a re-attach
	now := metav1.Now()
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodPending, HostIP: p.cfg.Address, StartTime: &now,
		Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now}},
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &podRun{pod: pod, reported: reported, ws: ws, cancel: cancel, done: make(chan struct{})}
	p.pods[k] = r
	p.mu.Unlock()

	pl, err := planPod(pod)
	if err != nil {
		cancel()
		close(r.done)
		p.recorder.Event(pod, corev1.EventTypeWarning, ReasonUnsupported, err.Error())
		p.update(r, func(s *corev1.PodStatus) {
			s.Phase, s.Reason, s.Message = corev1.PodFailed, ReasonUnsupported, err.Error()
			for _, c := range pod.Spec.Containers {
				s.ContainerStatuses = append(s.ContainerStatuses, corev1.ContainerStatus{
					Name: c.Name, Image: c.Image,
					State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
						ExitCode: 1, Reason: ReasonUnsupported, Message: err.Error(), FinishedAt: now}},
				})
			}
		})
		return nil
	}
	p.mu.Lock()
	r.plan = pl
	p.mu.Unlock()
	p.update(r, func(s *corev1.PodStatus) {
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: pl.container, Image: pl.image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}}
	})
	go func() {
		defer close(r.done)
		p.run(wctx, r, pl)
	}()
	return nil
}

// fail ends the pod as Failed with an event.
func (p *provider) fail(r *podRun, reason string, err error) {
	p.secrets.forget(key(r.pod.Namespace, r.pod.Name))
	p.recorder.Event(r.pod, corev1.EventTypeWarning, reason, err.Error())
	p.update(r, func(s *corev1.PodStatus) {
		s.Phase, s.Reason, s.Message = corev1.PodFailed, reason, err.Error()
		for i := range s.ContainerStatuses {
			s.ContainerStatuses[i].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 1, Reason: reason, Message: err.Error(), FinishedAt: metav1.Now()}}
			s.ContainerStatuses[i].Ready = false
		}
		setReady(s, false)
	})
}

// run creates and boots the workspace, then runs the workload as a long
// exec, again per the restart policy, until it is done or ctx ends (the
// pod is being deleted).
func (p *provider) run(ctx context.Context, r *podRun, pl *plan) {
	h := p.cfg.Home
	store, err := image.OpenStore(h)
	if err != nil {
		p.fail(r, ReasonPullFailed, err)
		return
	}
	img, err := store.Get(ctx, pl.image, pl.pull)
	if err != nil {
		p.fail(r, ReasonPullFailed, fmt.Errorf("pull %s: %w", pl.image, err))
		return
	}
	argv, err := pl.argv(img.Config)
	if err != nil {
		p.fail(r, ReasonUnsupported, err)
		return
	}
	// Before a re-attach too: the running supervisor asks the node for
	// the pod's Secrets at a fetch or a rehydration.
	ps, err := pl.secrets.resolve(ctx, p.secrets.get)
	if err != nil {
		p.fail(r, ReasonSecret, err)
		return
	}
	p.secrets.allow(key(r.pod.Namespace, r.pod.Name), pl.secrets.namespace, ps.refs)
	p.mu.Lock()
	pl.env = ps.env
	p.mu.Unlock()
	attached, err := p.reattach(ctx, r)
	if err != nil {
		p.fail(r, ReasonBootFailed, err)
		return
	}
	if attached == nil {
		if err := p.removeLeftover(ctx, r.ws); err != nil {
			p.fail(r, ReasonBootFailed, err)
			return
		}
		info, err := workspace.Create(ctx, h, workspace.CreateOptions{
			Name: r.ws, Image: pl.image, Pull: image.PullMissing, Resources: pl.resources,
			Agent: p.cfg.Agent, CreatedBy: p.createdBy(),
			Secrets: ps.decls, SecretsAudit: len(ps.decls.Secrets) > 0,
			Network: vmm.Network{AllowNames: pl.secrets.allowNames, Forwards: p.forwards(pl.publish)},
		})
		if err != nil {
			p.fail(r, ReasonBootFailed, err)
			return
		}
		if info.Digest != img.Digest.String() {
			p.fail(r, ReasonPullFailed, fmt.Errorf("image %s moved while the workspace was created (%s, then %s): recreate the pod", pl.image, img.Digest, info.Digest))
			return
		}
		if _, err := workspace.Start(ctx, h, workspace.StartOptions{Name: r.ws, Executable: p.cfg.Executable, Agent: p.cfg.Agent,
			ResolverEnv: []string{secrets.K8sSocketEnv + "=" + p.secrets.path}}); err != nil {
			if ctx.Err() == nil {
				p.fail(r, ReasonBootFailed, err)
			}
			return
		}
	}
	logPath, err := workspace.JobLog(h, r.ws, workloadJob)
	if err != nil {
		p.fail(r, ReasonBootFailed, err)
		return
	}
	p.mu.Lock()
	r.log = logPath
	p.mu.Unlock()
	backoff := backoffStart
	for {
		started := metav1.Now()
		if attached != nil {
			started = metav1.NewTime(attached.Started)
		}
		p.update(r, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodRunning
			cs := &s.ContainerStatuses[0]
			cs.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}
			cs.Ready, cs.Started = true, ptr(true)
			cs.ImageID, cs.ContainerID = img.Ref+"@"+img.Digest.String(), "microagent://"+r.ws
			setReady(s, true)
		})
		if attached != nil {
			p.recorder.Eventf(r.pod, corev1.EventTypeNormal, ReasonReattached, "workload running in workspace %s since %s: re-attached", r.ws, started.UTC().Format(time.RFC3339))
		} else {
			p.recorder.Eventf(r.pod, corev1.EventTypeNormal, ReasonStarted, "workload started in workspace %s", r.ws)
		}
		st, err := p.workload(ctx, r, pl, argv, attached != nil)
		attached = nil
		if ctx.Err() != nil {
			return // DeletePod reports the end
		}
		if err != nil {
			p.fail(r, ReasonBootFailed, fmt.Errorf("workload lost: %w", err))
			return
		}
		term := &corev1.ContainerStateTerminated{
			ExitCode: int32(st.Code), Signal: int32(st.Signal), StartedAt: started, FinishedAt: metav1.Now(),
			Reason: "Completed", Message: st.Error, ContainerID: "microagent://" + r.ws,
		}
		if st.Code != 0 {
			term.Reason = "Error"
		}
		again := pl.restart == corev1.RestartPolicyAlways || (pl.restart == corev1.RestartPolicyOnFailure && st.Code != 0)
		if !again {
			p.update(r, func(s *corev1.PodStatus) {
				s.Phase = corev1.PodSucceeded
				if st.Code != 0 {
					s.Phase = corev1.PodFailed
				}
				cs := &s.ContainerStatuses[0]
				cs.State, cs.Ready, cs.Started = corev1.ContainerState{Terminated: term}, false, ptr(false)
				setReady(s, false)
			})
			// The workload is over: free the VM; DeletePod deletes it.
			_, _ = workspace.Halt(context.WithoutCancel(ctx), h, workspace.HaltOptions{Name: r.ws})
			return
		}
		if time.Since(started.Time) > backoffReset {
			backoff = backoffStart
		}
		p.update(r, func(s *corev1.PodStatus) {
			cs := &s.ContainerStatuses[0]
			cs.LastTerminationState = corev1.ContainerState{Terminated: term}
			cs.RestartCount++
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
				Message: fmt.Sprintf("back-off %v restarting the workload", backoff)}}
			cs.Ready = false
			setReady(s, false)
		})
		p.recorder.Eventf(r.pod, corev1.EventTypeWarning, ReasonBackOff, "workload exited %d: restarting in %v", st.Code, backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, backoffMax)
	}
}

// forwards gives the pod's host ports the node's address where the pod
// named none: where the cluster reaches this node, not every interface.
func (p *provider) forwards(fws []vmm.Forward) []vmm.Forward {
	addr, _ := netip.ParseAddr(p.cfg.Address) // Run checked it is an IP
	out := make([]vmm.Forward, 0, len(fws))
	for _, fw := range fws {
		if !fw.HostIP.IsValid() {
			fw.HostIP = addr.Unmap()
		}
		out = append(out, fw)
	}
	return out
}

// workloadJob names the job that runs a pod's workload in its workspace.
const workloadJob = "workload"

// workload runs argv as the workspace's workload job (or, attached, waits
// for the one already running) and returns how it ended. The supervisor
// runs the job and keeps its output in the pod's log, so the workload
// outlives this process: a restarted node re-attaches to it.
func (p *provider) workload(ctx context.Context, r *podRun, pl *plan, argv []string, attached bool) (channel.ExitStatus, error) {
	if !attached {
		if _, err := workspace.StartJob(ctx, p.cfg.Home, workspace.JobOptions{
			Name: r.ws, Job: workloadJob, Argv: argv, Env: pl.env, Cwd: pl.cwd, MaxLog: p.cfg.maxLog(),
		}); err != nil {
			return channel.ExitStatus{}, err
		}
	}
	js, err := workspace.WaitJob(ctx, p.cfg.Home, r.ws, workloadJob)
	switch {
	case err != nil:
		return channel.ExitStatus{}, err
	case js.Exit == nil:
		return channel.ExitStatus{}, errors.New(js.Error)
	}
	return *js.Exit, nil
}

// reattach finds the pod's workload still running in a workspace an
// earlier node process started (the node was restarted; the workspace's
// supervisor kept the workload running) and returns the job to wait for,
// or nil when there is none to attach to. The pod's restart count is the
// one last reported.
func (p *provider) reattach(ctx context.Context, r *podRun) (*workspace.JobStatus, error) {
	info, err := workspace.Status(ctx, p.cfg.Home, r.ws)
	if errors.Is(err, workspace.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if info.CreatedBy != p.createdBy() || info.State != workspace.Running {
		return nil, nil
	}
	js, err := workspace.Job(ctx, p.cfg.Home, r.ws, workloadJob)
	if err != nil || !js.Running {
		return nil, nil // removeLeftover deals with it
	}
	p.mu.Lock()
	pod := r.pod.DeepCopy()
	if st := r.reported; len(st.ContainerStatuses) == 1 && len(pod.Status.ContainerStatuses) == 1 {
		pod.Status.ContainerStatuses[0].RestartCount = st.ContainerStatuses[0].RestartCount
		if st.StartTime != nil {
			pod.Status.StartTime = st.StartTime
		}
	}
	r.pod = pod
	p.mu.Unlock()
	return js, nil
}

// removeLeftover deletes a workspace of this node by the pod's name that
// an earlier node process left (its workload died with that process); a
// workspace of that name not marked as this node's is left alone and
// fails the pod.
func (p *provider) removeLeftover(ctx context.Context, ws string) error {
	info, err := workspace.Status(ctx, p.cfg.Home, ws)
	if errors.Is(err, workspace.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if info.CreatedBy != p.createdBy() {
		return fmt.Errorf("workspace %s exists and was not made by this node (created by %q): delete it or rename the pod", ws, info.CreatedBy)
	}
	if info.State.Live() {
		if _, err := workspace.Kill(ctx, p.cfg.Home, ws); err != nil {
			return err
		}
	}
	return workspace.Delete(ctx, p.cfg.Home, workspace.DeleteOptions{Name: ws, Force: true})
}

func (p *provider) createdBy() string { return "k8s:" + p.cfg.NodeName }

// detach stops following the pods, leaving their workspaces and
// workloads running, for the next node process to re-attach to.
func (p *provider) detach() {
	p.mu.Lock()
	runs := make([]*podRun, 0, len(p.pods))
	for _, r := range p.pods {
		r.cancel()
		runs = append(runs, r)
	}
	p.notify = nil
	p.mu.Unlock()
	for _, r := range runs {
		<-r.done
	}
}

// UpdatePod accepts changes Kubernetes allows on a running pod (labels,
// annotations, an image change is not acted on).
func (p *provider) UpdatePod(context.Context, *corev1.Pod) error { return nil }

// DeletePod halts the workspace within the pod's grace period, deletes it
// and reports the container terminated. It returns at once; the work goes
// on in the background, and a second call is a no-op.
func (p *provider) DeletePod(ctx context.Context, pod *corev1.Pod) error {
	k := key(pod.Namespace, pod.Name)
	p.mu.Lock()
	r, ok := p.pods[k]
	if !ok {
		p.mu.Unlock()
		return errdefs.NotFoundf("pod %s is not on this node", k)
	}
	if r.deleting {
		p.mu.Unlock()
		return nil
	}
	r.deleting = true
	p.mu.Unlock()
	grace := 30 * time.Second
	if g := pod.DeletionGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	} else if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	go p.remove(context.WithoutCancel(ctx), k, r, grace)
	return nil
}

func (p *provider) remove(ctx context.Context, k string, r *podRun, grace time.Duration) {
	h := p.cfg.Home
	if _, err := workspace.Halt(ctx, h, workspace.HaltOptions{Name: r.ws, Timeout: max(grace, time.Second)}); err != nil &&
		!errors.Is(err, workspace.ErrNotFound) && !errors.Is(err, workspace.ErrNotRunning) {
		_, _ = workspace.Kill(ctx, h, r.ws)
	}
	r.cancel()
	<-r.done
	p.secrets.forget(k)
	if err := workspace.Delete(ctx, h, workspace.DeleteOptions{Name: r.ws, Force: true}); err != nil && !errors.Is(err, workspace.ErrNotFound) {
		p.recorder.Eventf(r.pod, corev1.EventTypeWarning, "DeleteFailed", "delete workspace %s: %v", r.ws, err)
	}
	p.update(r, func(s *corev1.PodStatus) {
		if s.Phase != corev1.PodSucceeded && s.Phase != corev1.PodFailed {
			s.Phase = corev1.PodFailed
			s.Reason, s.Message = "Terminated", "the pod was deleted"
		}
		for i := range s.ContainerStatuses {
			cs := &s.ContainerStatuses[i]
			if cs.State.Terminated == nil {
				cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 143, Reason: "Terminated", Message: "the pod was deleted", FinishedAt: metav1.Now()}}
			}
			cs.Ready = false
		}
		setReady(s, false)
	})
	p.mu.Lock()
	if p.pods[k] == r {
		delete(p.pods, k)
	}
	p.mu.Unlock()
}

// GetPod returns the pod as this node last reported it.
func (p *provider) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.pods[key(namespace, name)]
	if !ok {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", namespace, name)
	}
	return r.pod.DeepCopy(), nil
}

// GetPodStatus returns the pod's last reported status.
func (p *provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods returns every pod this node runs.
func (p *provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(p.pods))
	for _, r := range p.pods {
		out = append(out, r.pod.DeepCopy())
	}
	return out, nil
}

// running returns the pod's workspace and log once its container is (or
// was) started; containerName must be the pod's one container.
func (p *provider) running(namespace, name, containerName string) (*podRun, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.pods[key(namespace, name)]
	if !ok {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", namespace, name)
	}
	if len(r.pod.Spec.Containers) != 1 || (containerName != "" && r.pod.Spec.Containers[0].Name != containerName) {
		return nil, errdefs.NotFoundf("pod %s/%s has no container %q that this node runs", namespace, name, containerName)
	}
	if r.log == "" {
		return nil, errdefs.InvalidInputf("pod %s/%s has not started yet", namespace, name)
	}
	return r, nil
}

// GetContainerLogs serves the workload's output (kubectl logs), following
// it while the workload runs when asked.
func (p *provider) GetContainerLogs(ctx context.Context, namespace, podName, containerName string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	r, err := p.running(namespace, podName, containerName)
	if err != nil {
		return nil, err
	}
	if opts.Previous || opts.Timestamps || opts.SinceSeconds > 0 || !opts.SinceTime.IsZero() {
		return nil, errdefs.InvalidInput("--previous, --timestamps, --since and --since-time are not supported by the microagent node")
	}
	return openLog(ctx, r.log, opts, r.done, p.finished(r))
}

// finished reports whether the pod's workload will write no more.
func (p *provider) finished(r *podRun) func() bool {
	return func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		ph := r.pod.Status.Phase
		return ph == corev1.PodSucceeded || ph == corev1.PodFailed
	}
}

// RunInContainer runs cmd in the pod's workspace (kubectl exec), with its
// exit code passed back.
func (p *provider) RunInContainer(ctx context.Context, namespace, podName, containerName string, cmd []string, attach api.AttachIO) error {
	r, err := p.running(namespace, podName, containerName)
	if err != nil {
		return err
	}
	// As the kubelet's: the container's environment and working dir.
	o := workspace.ExecOptions{Name: r.ws, Argv: cmd, Env: r.plan.env, Cwd: r.plan.cwd, TTY: attach.TTY()}
	if in := attach.Stdin(); in != nil {
		o.Stdin = in
	}
	if out := attach.Stdout(); out != nil {
		o.Stdout = out
	}
	if e := attach.Stderr(); e != nil {
		o.Stderr = e
	}
	if o.TTY {
		resizes := make(chan workspace.WindowSize)
		o.Resizes = resizes
		go func() {
			defer close(resizes)
			for sz := range attach.Resize() {
				select {
				case resizes <- workspace.WindowSize{Rows: sz.Height, Cols: sz.Width}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	st, err := workspace.Exec(ctx, p.cfg.Home, o)
	if err != nil {
		return err
	}
	if st.Code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", st.Code), Code: st.Code}
	}
	return nil
}

// AttachToContainer is refused: pods with stdin or a TTY are not run.
func (p *provider) AttachToContainer(context.Context, string, string, string, api.AttachIO) error {
	return errdefs.InvalidInput("attach is not supported by the microagent node: use kubectl exec")
}

// GetStatsSummary is not collected yet.
func (p *provider) GetStatsSummary(context.Context) (*statsv1alpha1.Summary, error) {
	return nil, errdefs.NotFound("stats are not collected by the microagent node yet")
}

// GetMetricsResource is not collected yet.
func (p *provider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) {
	return nil, errdefs.NotFound("metrics are not collected by the microagent node yet")
}

func setReady(s *corev1.PodStatus, ready bool) {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	now := metav1.Now()
	for _, t := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady, corev1.PodInitialized} {
		want := st
		if t == corev1.PodInitialized {
			want = corev1.ConditionTrue
		}
		found := false
		for i := range s.Conditions {
			if s.Conditions[i].Type == t {
				found = true
				if s.Conditions[i].Status != want {
					s.Conditions[i].Status, s.Conditions[i].LastTransitionTime = want, now
				}
			}
		}
		if !found {
			s.Conditions = append(s.Conditions, corev1.PodCondition{Type: t, Status: want, LastTransitionTime: now})
		}
	}
}

func ptr[T any](v T) *T { return &v }
