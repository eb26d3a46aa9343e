package k8snode

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/leakscan"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/workspace"
)

// TestPodSecrets runs a real control plane and node with real VMs: a
// Secret reaches the guest as an env var and as a volume file (0400),
// never the supervisor's or QEMU's environment nor any file of the node's
// state; a missing Secret fails the pod with an event; a rotated Secret
// is seen by the recreated pod; the node's socket refuses what no pod
// declared.
func TestPodSecrets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	e := newNodeEnv(t, "mn1")
	t.Cleanup(e.run(ctx, t))
	cp, cs, h, ref := e.cp, e.cs, e.cfg.Home, e.ref

	random := func(tag string) string {
		b := make([]byte, 12)
		rand.Read(b)
		return "k8s-" + tag + "-" + hex.EncodeToString(b)
	}
	token, password, rotated := random("token"), random("password"), random("rotated")
	for name, data := range map[string]map[string][]byte{"app": {"token": []byte(token)}, "files": {"password": []byte(password)}} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}
		if _, err := cs.CoreV1().Secrets("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	secretPod := func() *corev1.Pod {
		pod := testPod("sec", ref, corev1.RestartPolicyNever, "echo up; exec sleep 3600")
		c := &pod.Spec.Containers[0]
		c.Env = append(c.Env, secretEnv("TOKEN", "app", "token", false), secretEnv("LATER", "app", "token", false))
		pod.Annotations = map[string]string{AnnotationSecretOnDemand: "LATER", AnnotationEgressAllow: "api.example.com"}
		c.VolumeMounts = []corev1.VolumeMount{{Name: "creds", MountPath: "/etc/creds", ReadOnly: true}}
		pod.Spec.Volumes = []corev1.Volume{secretVolume("creds", "files")}
		return pod
	}
	show := `echo "$TOKEN"; cat /etc/creds/password; echo; stat -L -c %a /etc/creds/password`

	start := time.Now()
	create(ctx, t, cs, secretPod())
	waitPhase(ctx, t, cs, "sec", corev1.PodRunning)
	t.Logf("pod with Secrets created to Running: %v", time.Since(start))
	out, err := cp.RunKubectl(ctx, nil, "exec", "sec", "--", "sh", "-c", show)
	if want := token + "\n" + password + "\n400\n"; err != nil || out != want {
		t.Errorf("kubectl exec = %q, %v; want %q", out, err, want)
	}
	// On demand: neither a variable nor a file, and the guest serves its
	// secrets socket for the workload to fetch it.
	out, err = cp.RunKubectl(ctx, nil, "exec", "sec", "--", "sh", "-c", `echo "${LATER-unset}" $(ls /run/secrets) "$MICROAGENT_SECRETS_SOCK"`)
	if want := "unset TOKEN creds_password /run/secrets-api.sock\n"; err != nil || out != want {
		t.Errorf("on demand: kubectl exec = %q, %v; want %q", out, err, want)
	}
	if out, err := cp.RunKubectl(ctx, nil, "logs", "sec"); err != nil || out != "up\n" {
		t.Errorf("kubectl logs = %q, %v", out, err)
	}
	info, err := workspace.Status(ctx, h, workspaceName("default", "sec"))
	if err != nil || info.SupervisorPID == 0 || info.VMMPID == 0 {
		t.Fatalf("workspace: %+v, %v", info, err)
	}
	if info.Network == nil || !reflect.DeepEqual(info.Network.AllowNames, []string{"api.example.com"}) {
		t.Errorf("workspace network %+v, want the egress-allow annotation's allowlist", info.Network)
	}
	for what, pid := range map[string]int{"supervisor": info.SupervisorPID, "QEMU": info.VMMPID} {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatalf("%s environment: %v", what, err)
		}
		if strings.Contains(string(env), token) || strings.Contains(string(env), password) {
			t.Errorf("the %s (pid %d) has a Secret's value in its environment", what, pid)
		}
	}

	// The node's socket answers no reference that no pod declared.
	sockEnv := func(k string) (string, bool) { return h.Path(SecretSocket), k == secrets.K8sSocketEnv }
	for _, r := range []string{"default/files#other", "kube-system/app#token"} {
		if _, err := secrets.Resolve(ctx, secrets.Ref{Scheme: "k8s", Ref: r}, sockEnv); !errors.Is(err, secrets.ErrDenied) {
			t.Errorf("k8s:%s on the node's socket: %v, want denied", r, err)
		}
	}

	t.Run("missing", func(t *testing.T) {
		pod := testPod("nosec", ref, corev1.RestartPolicyNever, "true")
		pod.Spec.Containers[0].Env = []corev1.EnvVar{secretEnv("V", "absent", "k", false)}
		create(ctx, t, cs, pod)
		p := waitPhase(ctx, t, cs, "nosec", corev1.PodFailed)
		if p.Status.Reason != ReasonSecret || !strings.Contains(p.Status.Message, "Secret default/absent not found") {
			t.Errorf("status %q %q, want %s naming the Secret", p.Status.Reason, p.Status.Message, ReasonSecret)
		}
		waitEvent(ctx, t, cs, "nosec", ReasonSecret)
		if _, err := workspace.Status(ctx, h, workspaceName("default", "nosec")); !errors.Is(err, workspace.ErrNotFound) {
			t.Errorf("a pod whose Secret is missing has a workspace: %v", err)
		}
	})

	t.Run("rotation", func(t *testing.T) {
		s, err := cs.CoreV1().Secrets("default").Get(ctx, "app", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Data["token"] = []byte(rotated)
		if _, err := cs.CoreV1().Secrets("default").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cp.RunKubectl(ctx, nil, "delete", "pod", "sec", "--grace-period=5", "--wait=true"); err != nil {
			t.Fatal(err)
		}
		create(ctx, t, cs, secretPod())
		waitPhase(ctx, t, cs, "sec", corev1.PodRunning)
		out, err := cp.RunKubectl(ctx, nil, "exec", "sec", "--", "sh", "-c", show)
		if want := rotated + "\n" + password + "\n400\n"; err != nil || out != want {
			t.Errorf("after rotation kubectl exec = %q, %v; want %q", out, err, want)
		}
	})

	// Each start's access is in the workspace's audit log, by name.
	log, err := os.ReadFile(audit.PathFor(h, workspaceName("default", "sec")))
	if err != nil || !strings.Contains(string(log), "TOKEN") || !strings.Contains(string(log), "creds_password") {
		t.Errorf("audit log: %s, %v; want the accesses of TOKEN and creds_password", log, err)
	}

	// No value anywhere in the node's state: workspaces' disks, manifests,
	// supervisor and console logs, the pods' logs.
	var fps []leakscan.Fingerprint
	for _, v := range []string{token, password, rotated} {
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v))} {
			fp, err := leakscan.New([]byte(form))
			if err != nil {
				t.Fatal(err)
			}
			fps = append(fps, fp)
		}
	}
	control := filepath.Join(t.TempDir(), "control")
	if err := os.WriteFile(control, []byte("x"+token+"y"), 0o600); err != nil {
		t.Fatal(err)
	}
	if hits, err := leakscan.ScanFile(control, fps); err != nil || len(hits) == 0 {
		t.Fatalf("the scan misses a value in a file that holds it: %v, %v", hits, err)
	}
	files := 0
	err = filepath.Walk(h.Root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		files++
		hits, err := leakscan.ScanFile(p, fps)
		if err != nil {
			t.Errorf("scan %s: %v", p, err)
		} else if len(hits) > 0 {
			t.Errorf("%s holds a Secret's value (%d hits)", p, len(hits))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scanned %d files of the node's state: no value found", files)
}
