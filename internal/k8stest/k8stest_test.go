package k8stest

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestControlPlane starts a plane and checks each part works: the apiserver
// answers kubectl, the controller-manager made the default service
// account (Start waits on it), and the scheduler looks at a pod and says
// why it cannot place it (there is no node).
func TestControlPlane(t *testing.T) {
	cp := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := cp.RunKubectl(ctx, nil, "version", "-o", "json")
	if err != nil || !strings.Contains(out, `"gitVersion": "v`+Version+`"`) {
		t.Fatalf("kubectl version: %v\n%s", err, out)
	}
	cs := cp.Client(t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "p", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				t.Logf("scheduler: %s", c.Message)
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the scheduler never marked the pod unschedulable: %+v", p.Status)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
