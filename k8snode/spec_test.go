package k8snode

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/workspace"
)

func onePod(c corev1.Container) *corev1.Pod {
	return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{c}}}
}

func TestArgvRules(t *testing.T) {
	cfg := image.Config{Entrypoint: []string{"/ep"}, Cmd: []string{"cmd"}}
	for _, c := range []struct {
		command, args, want []string
	}{
		{nil, nil, []string{"/ep", "cmd"}},
		{nil, []string{"a"}, []string{"/ep", "a"}},
		{[]string{"/bin/x"}, nil, []string{"/bin/x"}},
		{[]string{"/bin/x"}, []string{"a"}, []string{"/bin/x", "a"}},
	} {
		p := &plan{command: c.command, args: c.args}
		got, err := p.argv(cfg)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("command %v args %v: %v, %v; want %v", c.command, c.args, got, err, c.want)
		}
	}
	if _, err := (&plan{}).argv(image.Config{}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("no command anywhere: %v, want ErrUnsupported", err)
	}
}

func TestPlanResources(t *testing.T) {
	q := resource.MustParse
	p, err := planPod(onePod(corev1.Container{Name: "c", Image: "i", Resources: corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceMemory: q("300Mi")},
		Requests: corev1.ResourceList{corev1.ResourceMemory: q("100Mi"), corev1.ResourceCPU: q("1500m")},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	if want := (workspace.Resources{MemoryMiB: 300, CPUs: 2}); p.resources != want {
		t.Errorf("resources %+v, want %+v (limit memory, request CPUs rounded up)", p.resources, want)
	}
	if p.restart != corev1.RestartPolicyAlways || p.pull != image.PullMissing {
		t.Errorf("defaults: restart %q pull %v", p.restart, p.pull)
	}
	p, err = planPod(onePod(corev1.Container{Name: "c", Image: "i"}))
	if err != nil || p.resources != (workspace.Resources{}) {
		t.Errorf("no resources: %+v, %v; want the zero value (default profile)", p, err)
	}
}

func TestPlanRefuses(t *testing.T) {
	ok := corev1.Container{Name: "c", Image: "i"}
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"two containers", &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{ok, ok}}}, "2 containers"},
		{"init", &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{ok}, InitContainers: []corev1.Container{ok}}}, "init containers"},
		{"volume", &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{ok},
			Volumes: []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}}}, `volume "v"`},
		{"configMap env", onePod(corev1.Container{Name: "c", Image: "i", Env: []corev1.EnvVar{{Name: "K",
			ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{Key: "k"}}}}}), "only secretKeyRef"},
		{"envFrom", onePod(corev1.Container{Name: "c", Image: "i", EnvFrom: []corev1.EnvFromSource{{}}}), "envFrom"},
		{"host network", &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{ok}, HostNetwork: true}}, "host namespaces"},
		{"probe", onePod(corev1.Container{Name: "c", Image: "i", ReadinessProbe: &corev1.Probe{}}), "probes"},
		{"tty", onePod(corev1.Container{Name: "c", Image: "i", TTY: true}), "stdin or a TTY"},
		{"bad env name", onePod(corev1.Container{Name: "c", Image: "i", Env: []corev1.EnvVar{{Name: "A=B"}}}), "not a valid variable"},
		{"zero memory", onePod(corev1.Container{Name: "c", Image: "i", Resources: corev1.ResourceRequirements{
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("0")}}}), "not positive"},
	} {
		_, err := planPod(c.pod)
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrUnsupported naming %q", c.name, err, c.want)
		}
	}
	// The token volume the ServiceAccount admission plugin adds is accepted.
	pod := onePod(ok)
	pod.Spec.Volumes = []corev1.Volume{{Name: "kube-api-access-x1", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}}}
	if _, err := planPod(pod); err != nil {
		t.Errorf("service-account volume: %v", err)
	}
}

func TestWorkspaceName(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range [][2]string{
		{"default", "web-1"}, {"default-web", "1"}, {"a", "b.c"}, {"a", "b_c"},
		{"ns", strings.Repeat("x", 253)}, {"ns", strings.Repeat("x", 252) + "y"},
	} {
		n := workspaceName(c[0], c[1])
		if err := workspace.ValidateName(n); err != nil {
			t.Errorf("%s/%s: %v", c[0], c[1], err)
		}
		if seen[n] {
			t.Errorf("%s/%s: name %s taken by another pod", c[0], c[1], n)
		}
		seen[n] = true
	}
}

func TestLabelValueAndNodeName(t *testing.T) {
	if got := labelValue("v1.2.3-4-gabc+dirty"); got != "v1.2.3-4-gabc_dirty" {
		t.Errorf("labelValue = %q", got)
	}
	if got := labelValue("-" + strings.Repeat("a", 70)); len(got) > 63 || got[0] == '-' {
		t.Errorf("labelValue = %q", got)
	}
	for _, bad := range []string{"", "UP", "-a", "a-", strings.Repeat("a", 64), "a_b"} {
		if ValidateNodeName(bad) == nil {
			t.Errorf("ValidateNodeName(%q) = nil", bad)
		}
	}
	if err := ValidateNodeName("node-1.example"); err != nil {
		t.Error(err)
	}
}

func TestPlanHostPorts(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i", Ports: []corev1.ContainerPort{
		{ContainerPort: 80, HostPort: 8080},
		{ContainerPort: 443, HostPort: 8443, HostIP: "192.0.2.7", Protocol: corev1.ProtocolTCP},
		{ContainerPort: 9000},
	}}}}}
	pl, err := planPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	want := []vmm.Forward{{HostPort: 8080, GuestPort: 80}, {HostIP: netip.MustParseAddr("192.0.2.7"), HostPort: 8443, GuestPort: 443}}
	if !slices.Equal(pl.publish, want) {
		t.Errorf("publish %+v, want %+v", pl.publish, want)
	}
	for _, c := range []struct {
		port corev1.ContainerPort
		why  string
	}{
		{corev1.ContainerPort{ContainerPort: 53, HostPort: 53, Protocol: corev1.ProtocolUDP}, "only TCP"},
		{corev1.ContainerPort{ContainerPort: 80, HostPort: 80, HostIP: "::1"}, "not an IPv4"},
		{corev1.ContainerPort{ContainerPort: 80, HostPort: 70000}, "1-65535"},
	} {
		pod.Spec.Containers[0].Ports = []corev1.ContainerPort{c.port}
		if _, err := planPod(pod); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("port %+v: %v, want a refusal naming %q", c.port, err, c.why)
		}
	}
}
