package k8snode

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/microagent-dev/microagent/internal/k8stest"
	"github.com/microagent-dev/microagent/internal/testenv"
)

// testPortForward (a part of TestPods) runs kubectl port-forward against
// a pod serving HTTP on its loopback: a page comes back through the local
// port, twice (a connection each), and a port nothing listens on in the
// pod is reported by kubectl with the guest's reason.
func testPortForward(ctx context.Context, t *testing.T, cp *k8stest.ControlPlane, cs kubernetes.Interface, ref string) {
	create(ctx, t, cs, testPod("web", ref, corev1.RestartPolicyNever, "mkdir -p /www && echo hello > /www/x && exec httpd -f -p 127.0.0.1:8080 -h /www"))
	waitPhase(ctx, t, cs, "web", corev1.PodRunning)
	// Running means the workload has started, not that httpd listens yet
	// (and kubectl ends at the first connection the pod refuses).
	if out, err := cp.RunKubectl(ctx, nil, "exec", "web", "--", "sh", "-c", "for i in $(seq 300); do wget -q -O /dev/null http://127.0.0.1:8080/x && exit 0; sleep 0.1; done; exit 1"); err != nil {
		t.Fatalf("httpd in the pod never answered: %v %s", err, out)
	}
	web, closed := testenv.MustFreePort(t), testenv.MustFreePort(t)
	cmd := exec.Command(cp.Kubectl, "--kubeconfig="+cp.Kubeconfig, "port-forward", "pod/web",
		fmt.Sprintf("%d:8080", web), fmt.Sprintf("%d:9999", closed), "--address", "127.0.0.1")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + cp.Dir}
	kubectl, err := testenv.StartProcess(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer kubectl.Stop()
	// saw waits for kubectl to have printed s.
	saw := func(s string) bool {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if strings.Contains(kubectl.Output(), s) {
				return true
			}
		}
		return false
	}
	if want := fmt.Sprintf("Forwarding from 127.0.0.1:%d -> 8080", web); !saw(want) {
		t.Fatalf("kubectl port-forward never said %q: %s", want, kubectl.Output())
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/x", web)
	t.Logf("first page through kubectl port-forward after %v", testenv.Fetch(t, url, "hello\n"))
	t.Logf("second page after %v", testenv.Fetch(t, url, "hello\n"))

	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", closed), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	b, _ := io.ReadAll(c) // kubectl closes the connection it could not forward
	c.Close()
	if len(b) != 0 {
		t.Errorf("the refused port answered %q", b)
	}
	// kubectl reports the error (and may exit).
	if !saw("nothing listens on 127.0.0.1:9999") {
		t.Errorf("kubectl does not give the guest's reason for port 9999: %s", kubectl.Output())
	}
	t.Logf("kubectl on the refused port: %s", strings.TrimSpace(kubectl.Output()))
}
