package k8snode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
)

// This file wires Virtual Kubelet's node package (the pod and node
// controllers, the kubelet API's routes) by hand rather than through its
// nodeutil package, which links k8s.io/apiserver for its webhook
// authenticator (half of microagent-node's size) and starts informers on
// every Secret, ConfigMap and Service in the cluster. Here the node watches
// only the pods bound to it, and the kubelet API authenticates by client
// certificate alone and authorizes each request with a SubjectAccessReview,
// as the kubelet's webhook mode does.

// informerResync is how often the pod informer replays its cache.
const informerResync = time.Minute

// serve runs the node's controllers and kubelet API until ctx ends or a
// controller fails.
func serve(ctx context.Context, cfg *Config, client kubernetes.Interface, prov *provider, recorder record.EventRecorder,
	capacity corev1.ResourceList, port int, serving tls.Certificate, clientCAs *x509.CertPool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	pods := informers.NewSharedInformerFactoryWithOptions(client, informerResync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	podInformer := pods.Core().V1().Pods()
	// The pod controller wants Secret, ConfigMap and Service informers for
	// the environment it resolves, which this node has it skip
	// (SkipDownwardAPIResolution): they are handed over, never started,
	// so nothing of them is listed or watched.
	unused := informers.NewSharedInformerFactory(client, 0)
	pc, err := node.NewPodController(node.PodControllerConfig{
		PodClient: client.CoreV1(), EventRecorder: recorder, Provider: prov,
		PodInformer:               podInformer,
		SecretInformer:            unused.Core().V1().Secrets(),
		ConfigMapInformer:         unused.Core().V1().ConfigMaps(),
		ServiceInformer:           unused.Core().V1().Services(),
		SkipDownwardAPIResolution: true,
	})
	if err != nil {
		return fmt.Errorf("node %s: pod controller: %w", cfg.NodeName, err)
	}

	spec := nodeSpec(cfg, capacity, port)
	np := node.NewNaiveNodeProvider()
	nc, err := node.NewNodeController(np, spec, client.CoreV1().Nodes(),
		node.WithNodeEnableLeaseV1(client.CoordinationV1().Leases(corev1.NamespaceNodeLease), node.DefaultLeaseDuration))
	if err != nil {
		return fmt.Errorf("node %s: node controller: %w", cfg.NodeName, err)
	}

	mux := http.NewServeMux()
	mux.Handle("/", api.PodHandler(api.PodHandlerConfig{
		RunInContainer:     prov.RunInContainer,
		AttachToContainer:  prov.AttachToContainer,
		GetContainerLogs:   prov.GetContainerLogs,
		GetPods:            prov.GetPods,
		GetStatsSummary:    prov.GetStatsSummary,
		GetMetricsResource: prov.GetMetricsResource,
		PortForward:        prov.PortForward,
		GetPodsFromKubernetes: func(context.Context) ([]*corev1.Pod, error) {
			return podInformer.Lister().List(labels.Everything())
		},
	}, true))
	tlsCfg := &tls.Config{
		Certificates: []tls.Certificate{serving},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
		MinVersion:   tls.VersionTLS12,
	}
	ln, err := tls.Listen("tcp", cfg.Listen, tlsCfg)
	if err != nil {
		return fmt.Errorf("node %s: kubelet API: %w", cfg.NodeName, err)
	}
	srv := &http.Server{
		Handler:           &kubeletAuth{next: mux, sar: client.AuthorizationV1().SubjectAccessReviews(), node: cfg.NodeName},
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go srv.Serve(ln)
	defer srv.Close()

	pods.Start(ctx.Done())
	go pc.Run(ctx, 4)
	defer func() { cancel(); <-pc.Done() }()
	select {
	case <-pc.Ready():
	case <-pc.Done():
		return pc.Err()
	case <-ctx.Done():
		return nil
	}
	go nc.Run(ctx)
	defer func() { cancel(); <-nc.Done() }()
	select {
	case <-nc.Ready():
	case <-nc.Done():
		return nc.Err()
	case <-ctx.Done():
		return nil
	}
	setNodeReady(spec)
	if err := np.UpdateStatus(ctx, spec); err != nil && ctx.Err() == nil {
		return fmt.Errorf("node %s: mark it ready: %w", cfg.NodeName, err)
	}
	select {
	case <-ctx.Done():
		return nil
	case <-nc.Done():
		return nc.Err()
	case <-pc.Done():
		return pc.Err()
	}
}

// nodeSpec is the node object this node registers.
func nodeSpec(cfg *Config, capacity corev1.ResourceList, port int) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: cfg.NodeName,
			Labels: map[string]string{
				"type":               "virtual-kubelet",
				"kubernetes.io/role": "agent",
				corev1.LabelHostname: cfg.NodeName,
			},
		},
		Status: corev1.NodeStatus{
			Phase: corev1.NodePending,
			Conditions: []corev1.NodeCondition{
				{Type: corev1.NodeReady}, {Type: corev1.NodeDiskPressure}, {Type: corev1.NodeMemoryPressure},
				{Type: corev1.NodePIDPressure}, {Type: corev1.NodeNetworkUnavailable},
			},
		},
	}
	fillNode(n, cfg, capacity, port)
	return n
}

// setNodeReady marks the node running and Ready, the pressure conditions
// false.
func setNodeReady(n *corev1.Node) {
	now := metav1.Now()
	n.Status.Phase = corev1.NodeRunning
	for i := range n.Status.Conditions {
		c := &n.Status.Conditions[i]
		c.LastHeartbeatTime, c.LastTransitionTime = now, now
		if c.Type == corev1.NodeReady {
			c.Status, c.Reason, c.Message = corev1.ConditionTrue, "KubeletReady", "microagent node is ready"
		} else {
			c.Status, c.Reason = corev1.ConditionFalse, "KubeletHasNo"+string(c.Type)
		}
	}
}

// The kubelet's cache lifetimes for authorization decisions.
const (
	allowTTL = 5 * time.Minute
	denyTTL  = 30 * time.Second
	// maxDecisions bounds the cache; it is emptied when full.
	maxDecisions = 1024
)

// subjectAccessReviews is the part of the client kubeletAuth uses.
type subjectAccessReviews interface {
	Create(context.Context, *authzv1.SubjectAccessReview, metav1.CreateOptions) (*authzv1.SubjectAccessReview, error)
}

// kubeletAuth authorizes kubelet API requests: the client certificate
// (verified by TLS against the client CA) names the user and groups, and
// the apiserver decides whether they may act on this node's subresource.
type kubeletAuth struct {
	next http.Handler
	sar  subjectAccessReviews
	node string

	mu    sync.Mutex
	cache map[string]decision // by user, verb, subresource and groups
}

type decision struct {
	allowed bool
	until   time.Time
}

func (a *kubeletAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	cert := r.TLS.PeerCertificates[0]
	spec := authzv1.SubjectAccessReviewSpec{
		User:   cert.Subject.CommonName,
		Groups: slices.Clone(cert.Subject.Organization),
		ResourceAttributes: &authzv1.ResourceAttributes{
			Verb: apiVerb(r.Method), Resource: "nodes", Version: "v1",
			Subresource: subresource(r.URL.Path), Name: a.node,
		},
	}
	ok, err := a.allowed(r.Context(), spec)
	switch {
	case err != nil:
		http.Error(w, "authorization failed: "+err.Error(), http.StatusInternalServerError)
	case !ok:
		http.Error(w, "Forbidden", http.StatusForbidden)
	default:
		a.next.ServeHTTP(w, r)
	}
}

func (a *kubeletAuth) allowed(ctx context.Context, spec authzv1.SubjectAccessReviewSpec) (bool, error) {
	if spec.User == "" {
		return false, nil
	}
	ra := spec.ResourceAttributes
	key := strings.Join(append([]string{spec.User, ra.Verb, ra.Subresource}, spec.Groups...), "\x00")
	now := time.Now()
	a.mu.Lock()
	d, ok := a.cache[key]
	a.mu.Unlock()
	if ok && now.Before(d.until) {
		return d.allowed, nil
	}
	res, err := a.sar.Create(ctx, &authzv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	if res.Status.EvaluationError != "" && !res.Status.Allowed {
		return false, errors.New(res.Status.EvaluationError)
	}
	ttl := denyTTL
	if res.Status.Allowed {
		ttl = allowTTL
	}
	a.mu.Lock()
	if a.cache == nil || len(a.cache) >= maxDecisions {
		a.cache = map[string]decision{}
	}
	a.cache[key] = decision{allowed: res.Status.Allowed, until: now.Add(ttl)}
	a.mu.Unlock()
	return res.Status.Allowed, nil
}

// apiVerb maps an HTTP method to the verb authorized, as the kubelet does.
func apiVerb(method string) string {
	switch method {
	case http.MethodPost:
		return "create"
	case http.MethodGet, http.MethodHead:
		return "get"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	return ""
}

// subresource maps a kubelet API path to the node subresource authorized,
// as the kubelet does: exec, logs of containers, port-forward and the
// rest are "proxy".
func subresource(path string) string {
	for _, p := range []struct{ prefix, sub string }{{"/stats", "stats"}, {"/metrics", "metrics"}, {"/logs", "log"}, {"/spec", "spec"}} {
		if path == p.prefix || strings.HasPrefix(path, p.prefix+"/") {
			return p.sub
		}
	}
	return "proxy"
}
