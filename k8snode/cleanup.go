package k8snode

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/microagent-dev/microagent/workspace"
)

// Event reasons of the start-up cleanup, recorded on the node.
const (
	ReasonLeftoverRemoved = "LeftoverRemoved"
	ReasonCleanupFailed   = "CleanupFailed"
)

// cleanupLeftovers kills and deletes the workspaces an earlier process of
// this node left behind (created by "k8s:"+NodeName) whose pods are no
// longer this node's to run: deleted, being deleted (evicted while the
// node was down: Kubernetes has started their replacements elsewhere),
// finished, or bound to another node. Without it their VMs would run on,
// unseen, since Virtual Kubelet asks the provider only about pods bound
// here. A workspace of a pod still bound here and live stays: CreatePod
// re-attaches to its workload, or recreates it (reattach, removeLeftover).
// It runs before the node serves,
// so no pod of this process is being created meanwhile. A workspace that
// cannot be removed is reported as an event on the node and left; the
// node still starts.
func (p *provider) cleanupLeftovers(ctx context.Context, client kubernetes.Interface) error {
	infos, err := workspace.List(ctx, p.cfg.Home)
	if err != nil {
		return fmt.Errorf("list this node's workspaces in %s: %w", p.cfg.Home.Root, err)
	}
	var mine []*workspace.Info
	for _, i := range infos {
		if i.CreatedBy == p.createdBy() {
			mine = append(mine, i)
		}
	}
	if len(mine) == 0 {
		return nil
	}
	pods, err := client.CoreV1().Pods(corev1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", p.cfg.NodeName).String(),
	})
	if err != nil {
		return fmt.Errorf("list the pods bound to node %s (to tell which of its workspaces are leftovers): %w", p.cfg.NodeName, err)
	}
	keep := map[string]bool{}
	for _, pod := range pods.Items {
		done := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
		if pod.DeletionTimestamp == nil && !done {
			keep[workspaceName(pod.Namespace, pod.Name)] = true
		}
	}
	node := &corev1.ObjectReference{Kind: "Node", Name: p.cfg.NodeName, UID: types.UID(p.cfg.NodeName)}
	for _, i := range mine {
		if keep[i.Name] {
			continue
		}
		if err := p.removeLeftover(ctx, i.Name); err != nil {
			p.recorder.Eventf(node, corev1.EventTypeWarning, ReasonCleanupFailed, "workspace %s left by an earlier run: %v", i.Name, err)
			continue
		}
		p.recorder.Eventf(node, corev1.EventTypeNormal, ReasonLeftoverRemoved, "workspace %s left by an earlier run, whose pod is no longer bound here, killed and deleted", i.Name)
	}
	return nil
}
