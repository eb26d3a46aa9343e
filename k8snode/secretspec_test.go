package k8snode

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/microagent-dev/microagent/internal/k8stest"
	"github.com/microagent-dev/microagent/secrets"
)

func secretEnv(name, secret, key string, optional bool) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key, Optional: &optional}}}
}

func secretVolume(name, secret string, items ...corev1.KeyToPath) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret, Items: items}}}
}

func TestPlanSecretRefusals(t *testing.T) {
	mode := int32(0o644)
	for _, c := range []struct {
		name string
		edit func(*corev1.Pod)
		want string
	}{
		{"configMap envFrom", func(p *corev1.Pod) {
			p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{}}}
		}, "reads a ConfigMap"},
		{"configMap volume", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}}}
		}, `volume "cm" is a ConfigMap`},
		{"env name", func(p *corev1.Pod) { p.Spec.Containers[0].Env = []corev1.EnvVar{secretEnv("my-var", "s", "k", false)} }, "[A-Za-z_]"},
		{"bad secret name", func(p *corev1.Pod) {
			p.Spec.Containers[0].Env = []corev1.EnvVar{secretEnv("V", "Bad_Name", "k", false)}
		}, "DNS-1123"},
		{"bad key", func(p *corev1.Pod) { p.Spec.Containers[0].Env = []corev1.EnvVar{secretEnv("V", "s", "a/b", false)} }, "key"},
		{"subPath", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{secretVolume("v", "s")}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/etc/v", SubPath: "x"}}
		}, "subPath"},
		{"mount in /proc", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{secretVolume("v", "s")}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/proc/x"}}
		}, "/proc"},
		{"mount over /run/secrets", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{secretVolume("v", "s")}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/run"}}
		}, "/run/secrets"},
		{"item traversal", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{secretVolume("v", "s", corev1.KeyToPath{Key: "k", Path: "../../etc/passwd"})}
		}, "clean relative path"},
		{"item mode", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{secretVolume("v", "s", corev1.KeyToPath{Key: "k", Path: "k", Mode: &mode})}
		}, "sets a mode"},
		{"egress syntax", func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationSecretEgress: "K=k8s:default/s#k"} }, "@HOST"},
		{"egress host scheme", func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationSecretEgress: "K=env:HOME@api.example.com"}
		}, "only k8s:"},
		{"egress other namespace", func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationSecretEgress: "K=k8s:kube-system/s#k@api.example.com"}
		}, "pod's namespace"},
		{"egress TLD", func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationSecretEgress: "K=k8s:default/s#k@.com"}
		}, "top-level"},
		{"egress-allow", func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationEgressAllow: "ok.example.com,*.bad"} }, "wildcards"},
		{"on-demand", func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationSecretOnDemand: "A,,B"} }, AnnotationSecretOnDemand},
	} {
		pod := onePod(corev1.Container{Name: "c", Image: "i"})
		pod.Namespace = "default"
		c.edit(pod)
		if _, err := planPod(pod); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrUnsupported naming %q", c.name, err, c.want)
		}
	}
}

// TestSecretsFromAPIServer runs a real apiserver: a pod's env, envFrom
// and secret volumes become declarations (keys read from the Secrets,
// optional ones left out, missing ones failing the pod by name), and the
// node's socket answers only what a pod it runs declared, reading the
// Secret afresh each time (rotation).
func TestSecretsFromAPIServer(t *testing.T) {
	cp := k8stest.Start(t)
	cs := cp.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mk := func(ns, name string, data map[string]string) {
		t.Helper()
		if ns != "default" {
			if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, StringData: data}
		if _, err := cs.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk("default", "app", map[string]string{"token": "tok-value-1", "url": "https://x", "not-a-var": "v", "OVER": "from-envfrom", "blank": ""})
	mk("default", "files", map[string]string{"password": "pw-value", "user": "bob"})
	mk("other", "app", map[string]string{"token": "other-ns-value"})
	get := func(ctx context.Context, ns, name string) (*corev1.Secret, error) {
		return cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	}

	pod := onePod(corev1.Container{Name: "c", Image: "i",
		EnvFrom: []corev1.EnvFromSource{{Prefix: "APP_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app"}}}},
		Env: []corev1.EnvVar{
			{Name: "PLAIN", Value: "p"}, secretEnv("TOKEN", "app", "token", false), secretEnv("OPT", "absent", "k", true),
			secretEnv("OPT2", "app", "absent", true), {Name: "APP_OVER", Value: "plain-wins"}, secretEnv("LATER", "app", "url", false),
		},
		VolumeMounts: []corev1.VolumeMount{{Name: "creds", MountPath: "/etc/creds", ReadOnly: true}, {Name: "one", MountPath: "/etc/one"}},
	})
	pod.Namespace = "default"
	pod.Annotations = map[string]string{AnnotationSecretOnDemand: "LATER", AnnotationEgressAllow: "api.example.com"}
	pod.Spec.Volumes = []corev1.Volume{secretVolume("creds", "files"), secretVolume("one", "files", corev1.KeyToPath{Key: "password", Path: "sub/pw"})}
	pl, err := planPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := pl.secrets.resolve(ctx, get)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"APP_OVER=plain-wins", "PLAIN=p"}; !reflect.DeepEqual(ps.env, want) {
		t.Errorf("plain env %q, want %q", ps.env, want)
	}
	ref := func(s string) secrets.Ref { return secrets.Ref{Scheme: "k8s", Ref: s} }
	want := []secrets.Decl{
		{Name: "APP_token", Ref: ref("default/app#token"), Env: true},
		{Name: "APP_url", Ref: ref("default/app#url"), Env: true},
		{Name: "TOKEN", Ref: ref("default/app#token"), Env: true},
		{Name: "LATER", Ref: ref("default/app#url"), OnDemand: true},
		{Name: "creds_password", Ref: ref("default/files#password"), Mount: "/etc/creds", Path: "password"},
		{Name: "creds_user", Ref: ref("default/files#user"), Mount: "/etc/creds", Path: "user"},
		{Name: "one_sub_pw", Ref: ref("default/files#password"), Mount: "/etc/one", Path: "sub/pw"},
	}
	if !reflect.DeepEqual(ps.decls.Secrets, want) {
		t.Errorf("declarations\n%+v\nwant\n%+v", ps.decls.Secrets, want)
	}
	if !reflect.DeepEqual(pl.secrets.allowNames, []string{"api.example.com"}) {
		t.Errorf("egress allow %v", pl.secrets.allowNames)
	}

	for name, c := range map[string]struct {
		env  []corev1.EnvVar
		ann  string
		want string
	}{
		"missing secret": {[]corev1.EnvVar{secretEnv("V", "absent", "k", false)}, "", "env V: Secret default/absent not found"},
		"missing key":    {[]corev1.EnvVar{secretEnv("V", "app", "nokey", false)}, "", "env V: Secret default/app has no key nokey"},
		"on-demand name": {[]corev1.EnvVar{secretEnv("V", "app", "token", false)}, "W", `names "W"`},
		"empty key":      {[]corev1.EnvVar{secretEnv("V", "app", "blank", false)}, "", "key blank is empty"},
	} {
		p := onePod(corev1.Container{Name: "c", Image: "i", Env: c.env})
		p.Namespace = "default"
		if c.ann != "" {
			p.Annotations = map[string]string{AnnotationSecretOnDemand: c.ann}
		}
		pl, err := planPod(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pl.secrets.resolve(ctx, get); err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "tok-value") {
			t.Errorf("%s: %v, want an error naming %q", name, err, c.want)
		}
	}

	// The node's socket.
	srv, err := listenSecrets(filepath.Join(t.TempDir(), SecretSocket), get)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	env := func(k string) (string, bool) { return srv.path, k == secrets.K8sSocketEnv }
	resolve := func(r string) (string, error) {
		v, err := secrets.Resolve(ctx, secrets.Ref{Scheme: "k8s", Ref: r}, env)
		if err != nil {
			return "", err
		}
		defer v.Zero()
		return string(v.Bytes()), nil
	}
	if _, err := resolve("default/app#token"); !errors.Is(err, secrets.ErrDenied) {
		t.Errorf("before any pod declared it: %v, want denied", err)
	}
	// A pod's references outside its namespace are never allowed.
	srv.allow("default/p", "default", append(ps.refs, secrets.K8sRef{Namespace: "other", Secret: "app", Key: "token"}))
	if v, err := resolve("default/app#token"); err != nil || v != "tok-value-1" {
		t.Errorf("declared: %q, %v", v, err)
	}
	if _, err := resolve("other/app#token"); !errors.Is(err, secrets.ErrDenied) {
		t.Errorf("another namespace: %v, want denied", err)
	}
	if _, err := resolve("default/files#nokey"); !errors.Is(err, secrets.ErrDenied) {
		t.Errorf("a reference no pod declared: %v, want denied", err)
	}
	// Rotation: the next resolution reads the new value.
	sec, err := cs.CoreV1().Secrets("default").Get(ctx, "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data["token"] = []byte("tok-value-2")
	if _, err := cs.CoreV1().Secrets("default").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if v, err := resolve("default/app#token"); err != nil || v != "tok-value-2" {
		t.Errorf("after rotation: %q, %v", v, err)
	}
	if err := cs.CoreV1().Secrets("default").Delete(ctx, "files", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := resolve("default/files#password"); !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "default/files") {
		t.Errorf("deleted Secret: %v, want not found", err)
	}
	// Hostile frames: oversized, cut, garbage; each refused with a reply.
	for name, frame := range map[string][]byte{
		"oversized": binary.BigEndian.AppendUint16(nil, 65535),
		"garbage":   append(binary.BigEndian.AppendUint16(nil, 9), "../../etc"...),
	} {
		c, err := net.Dial("unix", srv.path)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(frame)
		var hdr [5]byte
		if _, err := c.Read(hdr[:]); err != nil || hdr[0] == 0 {
			t.Errorf("%s frame: status %d, %v; want a refusal", name, hdr[0], err)
		}
		c.Close()
	}
	srv.forget("default/p")
	if _, err := resolve("default/app#token"); !errors.Is(err, secrets.ErrDenied) {
		t.Errorf("after the pod is gone: %v, want denied", err)
	}
}
