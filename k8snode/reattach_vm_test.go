package k8snode

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/microagent-dev/microagent/workspace"
)

// TestNodeRestartReattaches: a node process that stops leaves its pods'
// workloads running in their workspaces; the next one re-attaches (same
// VM, same workload, no restart counted), serves logs and exec, and
// reports the workload's end when it comes.
func TestNodeRestartReattaches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	e := newNodeEnv(t, "rn1")
	cp, cs, h, ref := e.cp, e.cs, e.cfg.Home, e.ref
	stop := e.run(ctx, t)
	create(ctx, t, cs, testPod("keep", ref, corev1.RestartPolicyNever,
		"echo before; while [ ! -e /tmp/end ]; do sleep 0.2; done; echo after; exit 0"))
	waitPhase(ctx, t, cs, "keep", corev1.PodRunning)
	ws := workspaceName("default", "keep")
	before, err := workspace.Status(ctx, h, ws)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if js, err := workspace.Job(ctx, h, ws, workloadJob); err != nil || !js.Running {
		t.Fatalf("the workload after the node stopped: %+v %v, want running", js, err)
	}

	stop = e.run(ctx, t)
	defer stop()
	waitEvent(ctx, t, cs, "keep", ReasonReattached)
	p := waitPhase(ctx, t, cs, "keep", corev1.PodRunning)
	if cst := p.Status.ContainerStatuses; len(cst) != 1 || cst[0].RestartCount != 0 || cst[0].State.Running == nil {
		t.Errorf("container status after the re-attach %+v, want running, no restart", cst)
	}
	after, err := workspace.Status(ctx, h, ws)
	if err != nil || after.VMMPID != before.VMMPID || after.SupervisorPID != before.SupervisorPID {
		t.Fatalf("workspace after the re-attach: %+v %v; want the same VM (pid %d)", after, err, before.VMMPID)
	}
	if out, err := cp.RunKubectl(ctx, nil, "logs", "keep"); err != nil || out != "before\n" {
		t.Errorf("kubectl logs after the re-attach = %q, %v", out, err)
	}
	if _, err := cp.RunKubectl(ctx, nil, "exec", "keep", "--", "touch", "/tmp/end"); err != nil {
		t.Fatal(err)
	}
	p = waitPhase(ctx, t, cs, "keep", corev1.PodSucceeded)
	if cst := p.Status.ContainerStatuses; len(cst) != 1 || cst[0].State.Terminated == nil || cst[0].State.Terminated.ExitCode != 0 {
		t.Errorf("container status at the end %+v", cst)
	}
	if out, err := cp.RunKubectl(ctx, nil, "logs", "keep"); err != nil || out != "before\nafter\n" {
		t.Errorf("kubectl logs at the end = %q, %v", out, err)
	}
}
