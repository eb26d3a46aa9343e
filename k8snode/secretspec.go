package k8snode

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/vmm"
)

// Annotations that opt a pod into microagent's own secret and network
// features.
const (
	// AnnotationSecretOnDemand lists (comma-separated) the pod's secret
	// env vars and secret volumes delivered on demand (fetched by the
	// workload from the guest's secrets socket) instead of materialized.
	AnnotationSecretOnDemand = "microagent.dev/secret-on-demand"
	// AnnotationSecretEgress holds --secret-egress declarations,
	// NAME=k8s:NAMESPACE/SECRET#KEY@HOST[,HOST], one per line or
	// separated by ';'.
	AnnotationSecretEgress = "microagent.dev/secret-egress"
	// AnnotationEgressAllow lists (comma-separated) the hosts the
	// workspace may reach (--egress-allow).
	AnnotationEgressAllow = "microagent.dev/egress-allow"
)

// envEntry is one of the container's env entries in order: a plain value
// or a Secret's key.
type envEntry struct {
	name, value string
	ref         *secrets.K8sRef
	optional    bool
}

// envFromSecret is an envFrom secretRef: every key of the Secret.
type envFromSecret struct {
	secret, prefix string
	optional       bool
}

// volumeSecret is a secret volume mounted at mount.
type volumeSecret struct {
	volume, secret, mount string
	// index tells apart two mounts of one volume.
	index    int
	items    []corev1.KeyToPath // empty: every key, at its own name
	optional bool
}

// secretPlan is what a pod asks of Secrets, turned into declarations at
// run time (podSecrets), once the Secrets' keys are known.
type secretPlan struct {
	namespace  string
	env        []envEntry
	envFrom    []envFromSecret
	volumes    []volumeSecret
	onDemand   []string
	egress     []secrets.Decl
	allowNames []string
}

// planSecrets checks and records the container's env, envFrom, secret
// volumes and microagent's annotations; every refusal goes to refuse.
func planSecrets(pod *corev1.Pod, c *corev1.Container, refuse func(string, ...any)) *secretPlan {
	ns := pod.Namespace
	if ns == "" {
		ns = corev1.NamespaceDefault
	}
	sp := &secretPlan{namespace: ns}
	for _, e := range c.Env {
		if e.Name == "" || strings.ContainsAny(e.Name, "=\x00") || strings.ContainsRune(e.Value, 0) {
			refuse("env %q on container %q is not a valid variable", e.Name, c.Name)
			continue
		}
		if e.ValueFrom == nil {
			sp.env = append(sp.env, envEntry{name: e.Name, value: e.Value})
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		if ref == nil {
			refuse("env %s on container %q takes its value from a ConfigMap, a field or a resource (only secretKeyRef is supported)", e.Name, c.Name)
			continue
		}
		if !secrets.ValidName(e.Name) {
			refuse("env %s on container %q: a variable from a Secret needs a name of [A-Za-z_][A-Za-z0-9_]*", e.Name, c.Name)
			continue
		}
		r, err := secrets.ParseK8sRef(ns + "/" + ref.Name + "#" + ref.Key)
		if err != nil {
			refuse("env %s on container %q: Secret %q key %q: %v", e.Name, c.Name, ref.Name, ref.Key, err)
			continue
		}
		sp.env = append(sp.env, envEntry{name: e.Name, ref: &r, optional: ref.Optional != nil && *ref.Optional})
	}
	for _, ef := range c.EnvFrom {
		if ef.SecretRef == nil {
			refuse("envFrom on container %q reads a ConfigMap (only secretRef is supported)", c.Name)
			continue
		}
		if _, err := secrets.ParseK8sRef(ns + "/" + ef.SecretRef.Name + "#k"); err != nil {
			refuse("envFrom on container %q: Secret %q: %v", c.Name, ef.SecretRef.Name, err)
			continue
		}
		sp.envFrom = append(sp.envFrom, envFromSecret{secret: ef.SecretRef.Name, prefix: ef.Prefix,
			optional: ef.SecretRef.Optional != nil && *ef.SecretRef.Optional})
	}
	vols := map[string]*corev1.SecretVolumeSource{}
	for _, v := range pod.Spec.Volumes {
		switch {
		case serviceAccountVolume(v):
		case v.Secret != nil:
			vols[v.Name] = v.Secret
			for _, it := range v.Secret.Items {
				if !secrets.SecretKey(it.Key) || channel.CheckSecretTarget("/x", it.Path) != nil {
					refuse("volume %q: item key %q path %q (want a Secret key and a clean relative path)", v.Name, it.Key, it.Path)
				}
				if it.Mode != nil {
					refuse("volume %q: item %q sets a mode (files are 0400, owned by the image's user)", v.Name, it.Key)
				}
			}
		case v.ConfigMap != nil:
			refuse("volume %q is a ConfigMap (only secret volumes are supported)", v.Name)
		default:
			refuse("volume %q (only secret volumes, and the service-account token volume, which is not mounted, are accepted)", v.Name)
		}
	}
	mounts := map[string]int{}
	for _, m := range c.VolumeMounts {
		src, ok := vols[m.Name]
		if !ok {
			continue // the service-account token volume, not mounted; an unknown one the apiserver refuses
		}
		if m.SubPath != "" || m.SubPathExpr != "" {
			refuse("volume mount %q on container %q uses subPath", m.Name, c.Name)
			continue
		}
		if err := channel.CheckSecretTarget(m.MountPath, "x"); err != nil {
			refuse("volume mount %q on container %q: %v", m.Name, c.Name, err)
			continue
		}
		if _, err := secrets.ParseK8sRef(ns + "/" + src.SecretName + "#k"); err != nil {
			refuse("volume %q: Secret %q: %v", m.Name, src.SecretName, err)
			continue
		}
		sp.volumes = append(sp.volumes, volumeSecret{volume: m.Name, secret: src.SecretName, mount: m.MountPath,
			index: mounts[m.Name], items: src.Items, optional: src.Optional != nil && *src.Optional})
		mounts[m.Name]++
	}
	sp.annotations(pod.Annotations, refuse)
	return sp
}

// annotations reads microagent's annotations. Only k8s: references in
// the pod's namespace are accepted: a pod's author must not make the node
// read its host's environment, files or helpers.
func (sp *secretPlan) annotations(a map[string]string, refuse func(string, ...any)) {
	if v, ok := a[AnnotationSecretOnDemand]; ok {
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n == "" || strings.ContainsFunc(n, func(r rune) bool { return r < 0x20 }) || len(n) > 253 {
				refuse("annotation %s: want a comma-separated list of secret env var and volume names", AnnotationSecretOnDemand)
				break
			}
			sp.onDemand = append(sp.onDemand, n)
		}
	}
	if v, ok := a[AnnotationSecretEgress]; ok {
		for _, s := range strings.FieldsFunc(v, func(r rune) bool { return r == '\n' || r == ';' }) {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			d, err := secrets.ParseEgressDecl(s)
			if err != nil {
				refuse("annotation %s: %v", AnnotationSecretEgress, err)
				continue
			}
			if d.Ref.Scheme != "k8s" {
				refuse("annotation %s: %s: only k8s:%s/SECRET#KEY references (a pod must not read the node's own secrets)", AnnotationSecretEgress, d.Name, sp.namespace)
				continue
			}
			r, err := secrets.ParseK8sRef(d.Ref.Ref)
			if err != nil {
				refuse("annotation %s: %s: %v", AnnotationSecretEgress, d.Name, err)
				continue
			}
			if r.Namespace != sp.namespace {
				refuse("annotation %s: %s: the Secret must be in the pod's namespace %s", AnnotationSecretEgress, d.Name, sp.namespace)
				continue
			}
			for i, h := range d.EgressHosts {
				if d.EgressHosts[i], err = vmm.ParseSwapHost(h); err != nil {
					refuse("annotation %s: %s: %v", AnnotationSecretEgress, d.Name, err)
				}
			}
			sp.egress = append(sp.egress, d)
		}
	}
	if v, ok := a[AnnotationEgressAllow]; ok {
		for _, h := range strings.Split(v, ",") {
			name, err := vmm.ParseAllowName(strings.TrimSpace(h))
			if err != nil {
				refuse("annotation %s: %v", AnnotationEgressAllow, err)
				continue
			}
			sp.allowNames = append(sp.allowNames, name)
		}
	}
}

// podSecrets is a pod's secrets as the workspace gets them: the
// declarations, the plain env (without the names a Secret sets), and the
// references the node's socket may answer for it.
type podSecrets struct {
	decls secrets.Declarations
	env   []string
	refs  []secrets.K8sRef
}

// resolve reads each Secret the pod names once (with the node's
// credentials), to learn envFrom's and whole volumes' keys and to fail a
// pod whose Secret or key is missing now, naming it, rather than at boot.
// Optional ones that are missing are left out. Values are zeroed at once:
// the supervisor reads them afresh at every start.
func (sp *secretPlan) resolve(ctx context.Context, get getSecretFunc) (_ *podSecrets, err error) {
	keys := map[string][]string{} // by Secret, the keys with a value; nil: missing
	empty := map[string]bool{}    // secret/key of keys with an empty value
	keyOf := func(secret string) ([]string, error) {
		if k, ok := keys[secret]; ok {
			return k, nil
		}
		sec, err := get(ctx, sp.namespace, secret)
		if apierrors.IsNotFound(err) {
			keys[secret] = nil
			return nil, nil
		}
		if err != nil {
			return nil, secretGetError(secrets.K8sRef{Namespace: sp.namespace, Secret: secret}, err)
		}
		defer zeroSecret(sec)
		k := []string{}
		for key, v := range sec.Data {
			if len(v) == 0 {
				// A microagent secret is never empty: envFrom and whole
				// volumes leave such keys out, a named one fails.
				empty[secret+"/"+key] = true
				continue
			}
			k = append(k, key)
		}
		slices.Sort(k)
		keys[secret] = k
		return k, nil
	}
	missing := func(what, secret, key string) error {
		if key == "" {
			return fmt.Errorf("%s: Secret %s/%s not found", what, sp.namespace, secret)
		}
		if empty[secret+"/"+key] {
			return fmt.Errorf("%s: Secret %s/%s key %s is empty (a microagent secret never is)", what, sp.namespace, secret, key)
		}
		return fmt.Errorf("%s: Secret %s/%s has no key %s", what, sp.namespace, secret, key)
	}
	out := &podSecrets{}
	type envVal struct {
		plain string
		decl  *secrets.Decl
	}
	var order []string
	final := map[string]envVal{}
	set := func(name string, v envVal) {
		if _, ok := final[name]; !ok {
			order = append(order, name)
		}
		final[name] = v
	}
	for _, ef := range sp.envFrom {
		ks, err := keyOf(ef.secret)
		if err != nil {
			return nil, err
		}
		if ks == nil && !ef.optional {
			return nil, missing("envFrom", ef.secret, "")
		}
		for _, k := range ks {
			name := ef.prefix + k
			if !secrets.ValidName(name) {
				continue // as the kubelet does, a key that is no variable name is skipped
			}
			set(name, envVal{decl: &secrets.Decl{Name: name, Ref: k8sRef(sp.namespace, ef.secret, k), Env: true}})
		}
	}
	for _, e := range sp.env {
		if e.ref == nil {
			set(e.name, envVal{plain: e.value})
			continue
		}
		ks, err := keyOf(e.ref.Secret)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(ks, e.ref.Key) {
			if e.optional {
				continue // as the kubelet does: this entry sets nothing
			}
			key := e.ref.Key
			if ks == nil {
				key = "" // the Secret itself is missing
			}
			return nil, missing("env "+e.name, e.ref.Secret, key)
		}
		set(e.name, envVal{decl: &secrets.Decl{Name: e.name, Ref: k8sRef(sp.namespace, e.ref.Secret, e.ref.Key), Env: true}})
	}
	onDemand := map[string]bool{}
	for _, n := range sp.onDemand {
		onDemand[n] = false
	}
	var decls []secrets.Decl
	for _, name := range order {
		v := final[name]
		if v.decl == nil {
			out.env = append(out.env, name+"="+v.plain)
			continue
		}
		d := *v.decl
		if _, ok := onDemand[name]; ok {
			onDemand[name] = true
			d.OnDemand, d.Env = true, false
		}
		decls = append(decls, d)
	}
	for _, vs := range sp.volumes {
		ks, err := keyOf(vs.secret)
		if err != nil {
			return nil, err
		}
		if ks == nil {
			if vs.optional {
				continue
			}
			return nil, missing("volume "+vs.volume, vs.secret, "")
		}
		items := vs.items
		if len(items) == 0 {
			for _, k := range ks {
				items = append(items, corev1.KeyToPath{Key: k, Path: k})
			}
		}
		_, od := onDemand[vs.volume]
		if od {
			onDemand[vs.volume] = true
			if vs.index > 0 {
				continue // one set of on-demand names per volume
			}
		}
		for _, it := range items {
			if !slices.Contains(ks, it.Key) {
				if vs.optional {
					continue
				}
				return nil, missing("volume "+vs.volume, vs.secret, it.Key)
			}
			d := secrets.Decl{Name: volumeSecretName(vs.volume, vs.index, it.Path), Ref: k8sRef(sp.namespace, vs.secret, it.Key)}
			if od {
				d.OnDemand = true
			} else {
				d.Mount, d.Path = vs.mount, it.Path
			}
			decls = append(decls, d)
		}
	}
	for n, used := range onDemand {
		if !used {
			return nil, fmt.Errorf("annotation %s names %q, which is no secret env var or secret volume of the pod", AnnotationSecretOnDemand, n)
		}
	}
	decls = append(decls, sp.egress...)
	for _, d := range decls {
		if err := out.decls.Add(d); err != nil {
			return nil, err
		}
		if r, err := secrets.ParseK8sRef(d.Ref.Ref); err == nil && d.Ref.Scheme == "k8s" {
			out.refs = append(out.refs, r)
		}
	}
	return out, nil
}

func k8sRef(ns, secret, key string) secrets.Ref {
	return secrets.Ref{Scheme: "k8s", Ref: secrets.K8sRef{Namespace: ns, Secret: secret, Key: key}.String()}
}

// volumeSecretName names a secret volume's file as a microagent secret
// (its file in /run/secrets, the name an on-demand fetch asks for): the
// volume's name and the item's path, every other character '_', and the
// mount's index after the first.
func volumeSecretName(volume string, index int, path string) string {
	s := volume + "_" + path
	if index > 0 {
		s = fmt.Sprintf("%s_%d", s, index)
	}
	b := []byte(s)
	for i, c := range b {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	if b[0] >= '0' && b[0] <= '9' {
		b = append([]byte{'_'}, b...)
	}
	return string(b)
}
