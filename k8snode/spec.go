package k8snode

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/workspace"
)

// ErrUnsupported marks a pod this node refuses to run: the pod is marked
// Failed with the reason and never half-run.
var ErrUnsupported = errors.New("unsupported by the microagent node")

// plan is what a pod's one container becomes: a workspace and the long exec
// that is its workload.
type plan struct {
	container string
	image     string
	pull      image.PullPolicy
	resources workspace.Resources
	// command and args are the container's; argv is decided once the
	// image's config is known (see argv).
	command, args []string
	// env is the container's plain environment, set once its Secrets
	// are read (see secretPlan.resolve); Secrets' variables are not in it.
	env     []string
	secrets *secretPlan
	cwd     string
	restart corev1.RestartPolicy
	// publish are the container's host ports; a zero HostIP is the
	// node's address.
	publish []vmm.Forward
}

// planPod checks a pod against what this node supports and translates it.
// Everything refused is named in one error wrapping ErrUnsupported, so the
// pod's event says all that must change.
func planPod(pod *corev1.Pod) (*plan, error) {
	var why []string
	refuse := func(format string, args ...any) { why = append(why, fmt.Sprintf(format, args...)) }
	s := &pod.Spec
	if n := len(s.Containers); n != 1 {
		refuse("%d containers (a pod runs exactly one container, as one workspace)", n)
	}
	if len(s.InitContainers) > 0 {
		refuse("init containers")
	}
	if len(s.EphemeralContainers) > 0 {
		refuse("ephemeral containers")
	}
	if s.HostNetwork || s.HostPID || s.HostIPC {
		refuse("host namespaces (hostNetwork, hostPID, hostIPC): pods never run on the host")
	}
	switch s.RestartPolicy {
	case corev1.RestartPolicyNever, corev1.RestartPolicyOnFailure, corev1.RestartPolicyAlways, "":
	default:
		refuse("restartPolicy %q", s.RestartPolicy)
	}
	if len(s.Containers) == 0 {
		return nil, unsupported(why)
	}
	c := &s.Containers[0]
	if c.Image == "" {
		refuse("container %q has no image", c.Name)
	}
	if c.Stdin || c.TTY {
		refuse("container %q wants stdin or a TTY (attach is not supported: use kubectl exec)", c.Name)
	}
	if c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil {
		refuse("probes on container %q", c.Name)
	}
	if c.Lifecycle != nil {
		refuse("lifecycle hooks on container %q", c.Name)
	}
	if c.RestartPolicy != nil {
		refuse("a container restartPolicy on %q", c.Name)
	}
	p := &plan{
		container: c.Name, image: c.Image, command: c.Command, args: c.Args,
		cwd: c.WorkingDir, restart: s.RestartPolicy,
	}
	if p.restart == "" {
		p.restart = corev1.RestartPolicyAlways
	}
	p.secrets = planSecrets(pod, c, refuse)
	for _, cp := range c.Ports {
		fw, err := hostPort(cp)
		if err != nil {
			refuse("container %q: %v", c.Name, err)
			continue
		}
		if fw != nil {
			p.publish = append(p.publish, *fw)
		}
	}
	var err error
	if p.pull, err = pullPolicy(c.ImagePullPolicy); err != nil {
		refuse("%v", err)
	}
	if p.resources, err = resources(c.Resources); err != nil {
		refuse("container %q: %v", c.Name, err)
	}
	if len(why) > 0 {
		return nil, unsupported(why)
	}
	return p, nil
}

func unsupported(why []string) error {
	return fmt.Errorf("%w: %s", ErrUnsupported, strings.Join(why, "; "))
}

// serviceAccountVolume reports whether v is the projected token volume
// (kube-api-access-*) that the ServiceAccount admission plugin adds to every
// pod: accepted so ordinary pods run, not mounted in the guest.
func serviceAccountVolume(v corev1.Volume) bool {
	if v.Projected == nil || !strings.HasPrefix(v.Name, "kube-api-access-") {
		return false
	}
	for _, src := range v.Projected.Sources {
		if src.ServiceAccountToken == nil && src.ConfigMap == nil && src.DownwardAPI == nil {
			return false
		}
	}
	return true
}

// hostPort is the forward a container port with a hostPort asks for, nil
// for one without (reached through kubectl port-forward). Only TCP is
// published; a hostIP must be IPv4.
func hostPort(cp corev1.ContainerPort) (*vmm.Forward, error) {
	if cp.HostPort == 0 {
		return nil, nil
	}
	if cp.Protocol != "" && cp.Protocol != corev1.ProtocolTCP {
		return nil, fmt.Errorf("host port %d is %s (only TCP host ports are published)", cp.HostPort, cp.Protocol)
	}
	if cp.HostPort < 1 || cp.HostPort > 65535 || cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
		return nil, fmt.Errorf("host port %d to container port %d: ports are 1-65535", cp.HostPort, cp.ContainerPort)
	}
	fw := &vmm.Forward{HostPort: int(cp.HostPort), GuestPort: int(cp.ContainerPort)}
	if cp.HostIP != "" {
		ip, err := netip.ParseAddr(cp.HostIP)
		if err != nil || !ip.Is4() {
			return nil, fmt.Errorf("host port %d: hostIP %q is not an IPv4 address", cp.HostPort, cp.HostIP)
		}
		fw.HostIP = ip
	}
	return fw, nil
}

func pullPolicy(p corev1.PullPolicy) (image.PullPolicy, error) {
	switch p {
	case corev1.PullAlways:
		return image.PullAlways, nil
	case corev1.PullIfNotPresent, "":
		return image.PullMissing, nil
	case corev1.PullNever:
		return image.PullNever, nil
	}
	return 0, fmt.Errorf("imagePullPolicy %q", p)
}

// resources sizes the workspace: limits, else requests; memory rounded up
// to MiB, CPUs up to whole virtual CPUs. Neither: the zero value, which is
// the default profile.
func resources(r corev1.ResourceRequirements) (workspace.Resources, error) {
	pick := func(name corev1.ResourceName) (resource.Quantity, bool) {
		if q, ok := r.Limits[name]; ok {
			return q, true
		}
		q, ok := r.Requests[name]
		return q, ok
	}
	var res workspace.Resources
	if q, ok := pick(corev1.ResourceMemory); ok {
		b := q.Value()
		if b <= 0 {
			return res, fmt.Errorf("memory %s is not positive", q.String())
		}
		res.MemoryMiB = int((b + 1<<20 - 1) >> 20)
	}
	if q, ok := pick(corev1.ResourceCPU); ok {
		m := q.MilliValue()
		if m <= 0 {
			return res, fmt.Errorf("cpu %s is not positive", q.String())
		}
		res.CPUs = int((m + 999) / 1000)
	}
	return res, nil
}

// argv applies Kubernetes' rules to the image's Entrypoint and Cmd: a
// command replaces the Entrypoint (and the Cmd is dropped), args alone
// replace the Cmd.
func (p *plan) argv(cfg image.Config) ([]string, error) {
	var argv []string
	switch {
	case len(p.command) > 0:
		argv = append(append(argv, p.command...), p.args...)
	case len(p.args) > 0:
		argv = append(append(argv, cfg.Entrypoint...), p.args...)
	default:
		argv = append(append(argv, cfg.Entrypoint...), cfg.Cmd...)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: image %s has no Entrypoint or Cmd and container %q gives no command", ErrUnsupported, p.image, p.container)
	}
	return argv, nil
}

// workspaceName derives a pod's workspace name: "k8s-", the namespace and
// pod name made to fit, and a hash of both, so two pods never share a name
// however their names are cut or their dots replaced.
func workspaceName(namespace, pod string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + pod))
	suffix := "-" + hex.EncodeToString(sum[:4])
	base := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '_'
	}, namespace+"-"+pod)
	// 40 characters keep the workspace's socket paths short under a long
	// state directory; the hash keeps names unique.
	const keep = 40 - len("k8s-")
	if len(base) > keep {
		base = base[:keep]
	}
	return "k8s-" + base + suffix
}
