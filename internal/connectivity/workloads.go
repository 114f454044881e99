package connectivity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// Workload names, as in `cilium connectivity test`.
const (
	NameClient        = "client"
	NameClient2       = "client2"
	NameEchoSameNode  = "echo-same-node"
	NameEchoOtherNode = "echo-other-node"
	NameEcho          = "echo" // the Service with every echo pod behind it
	NameHostNetns     = "host-netns"

	// LabelPartOf marks every object the test creates.
	LabelPartOf = "app.kubernetes.io/part-of"
	PartOf      = "glia-connectivity-test"
	labelName   = "name"
	labelKind   = "kind"
)

// Params configure a run.
type Params struct {
	Namespace string
	// Images and commands of the workloads.
	EchoImage     string
	ClientImage   string
	ClientCommand []string
	// PingCommand is the ICMP probe; the destination address is appended.
	PingCommand []string
	HostImage   string
	// EchoPort is the echo pods' port; HostPort the host-network echo's.
	EchoPort int
	HostPort int
	// ClusterDomain is the DNS domain of Services (cluster.local).
	ClusterDomain string
	// ExternalTarget is the URL pod-to-world fetches; "" skips the test.
	// When the target answers with an IP address, it must not be the pod's.
	ExternalTarget string
	// ExpectedDropReasons are glia_drops_total reasons that may rise.
	ExpectedDropReasons []string
	// ReadyTimeout bounds the wait for the workloads.
	ReadyTimeout time.Duration
	// ServiceRequests is how many requests pod-to-service sends at most to
	// see every backend of a Service.
	ServiceRequests int

	ConnDisrupt ConnDisruptParams
}

// DefaultParams are the flags' defaults.
func DefaultParams() Params {
	return Params{
		Namespace:       "glia-test",
		EchoImage:       "glia/echo",
		ClientImage:     "glia/client",
		ClientCommand:   []string{"sleep", "infinity"},
		PingCommand:     []string{"ping", "-c", "1", "-W", "3"},
		HostImage:       "glia/echo",
		EchoPort:        8080,
		HostPort:        4011,
		ClusterDomain:   "cluster.local",
		ReadyTimeout:    3 * time.Minute,
		ServiceRequests: 30,
		ConnDisrupt:     DefaultConnDisruptParams(),
	}
}

func labels(name, kind string) map[string]string {
	return map[string]string{LabelPartOf: PartOf, labelName: name, labelKind: kind}
}

func meta(ns, name, kind string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels(name, kind)}
}

func affinityTo(name string, anti bool) *corev1.Affinity {
	term := []corev1.PodAffinityTerm{{
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{labelName: name}},
		TopologyKey:   corev1.LabelHostname,
	}}
	if anti {
		return &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: term}}
	}
	return &corev1.Affinity{PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: term}}
}

func deployment(ns, name, kind string, spec corev1.PodSpec) *appsv1.Deployment {
	one := int32(1)
	zero := int64(1)
	spec.TerminationGracePeriodSeconds = &zero
	return &appsv1.Deployment{
		ObjectMeta: meta(ns, name, kind),
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{labelName: name}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels(name, kind)}, Spec: spec},
		},
	}
}

func echoContainer(image string, port int) corev1.Container {
	return corev1.Container{
		Name:  "echo",
		Image: image,
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port), Protocol: corev1.ProtocolTCP}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(int32(port))}},
			PeriodSeconds: 2,
		},
	}
}

// Objects returns the workloads of the test. otherNode is false on a
// single-node cluster, where echo-other-node cannot be placed.
func (p Params) Objects(otherNode bool) (deps []*appsv1.Deployment, ds *appsv1.DaemonSet, svcs []*corev1.Service) {
	ns := p.Namespace
	client := corev1.PodSpec{Containers: []corev1.Container{{Name: "client", Image: p.ClientImage, Command: p.ClientCommand}}}
	client2 := *client.DeepCopy()
	client2.Affinity = affinityTo(NameClient, false)
	same := corev1.PodSpec{Containers: []corev1.Container{echoContainer(p.EchoImage, p.EchoPort)}, Affinity: affinityTo(NameClient, false)}
	deps = append(deps,
		deployment(ns, NameClient, "client", client),
		deployment(ns, NameClient2, "client", client2),
		deployment(ns, NameEchoSameNode, "echo", same))
	svcPort := []corev1.ServicePort{{Name: "http", Port: int32(p.EchoPort), TargetPort: intstr.FromInt32(int32(p.EchoPort)), Protocol: corev1.ProtocolTCP}}
	svc := func(name string, typ corev1.ServiceType, sel map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: meta(ns, name, "echo"), Spec: corev1.ServiceSpec{
			Type: typ, Selector: sel, Ports: svcPort,
		}}
	}
	svcs = append(svcs,
		svc(NameEchoSameNode, corev1.ServiceTypeNodePort, map[string]string{labelName: NameEchoSameNode}),
		svc(NameEcho, corev1.ServiceTypeClusterIP, map[string]string{labelKind: "echo"}))
	if otherNode {
		other := corev1.PodSpec{Containers: []corev1.Container{echoContainer(p.EchoImage, p.EchoPort)}, Affinity: affinityTo(NameClient, true)}
		deps = append(deps, deployment(ns, NameEchoOtherNode, "echo", other))
		svcs = append(svcs, svc(NameEchoOtherNode, corev1.ServiceTypeNodePort, map[string]string{labelName: NameEchoOtherNode}))
	}
	zero := int64(1)
	host := corev1.PodSpec{
		HostNetwork:                   true,
		DNSPolicy:                     corev1.DNSClusterFirstWithHostNet,
		TerminationGracePeriodSeconds: &zero,
		Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		Containers:                    []corev1.Container{echoContainer(p.HostImage, p.HostPort)},
	}
	host.Containers[0].Name = "host-echo"
	ds = &appsv1.DaemonSet{
		ObjectMeta: meta(ns, NameHostNetns, "host"),
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{labelName: NameHostNetns}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels(NameHostNetns, "host")}, Spec: host},
		},
	}
	return deps, ds, svcs
}

// ensureNamespace creates the namespace unless it exists.
func ensureNamespace(ctx context.Context, cs kubernetes.Interface, ns string) error {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Labels: map[string]string{LabelPartOf: PartOf},
	}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return nil
}

// create creates obj, leaving an existing object of the name as it is (a
// run with --keep-workloads left it).
func create[T any](ctx context.Context, what string, f func(context.Context, T, metav1.CreateOptions) (T, error), obj T) error {
	if _, err := f(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create %s: %w", what, err)
	}
	return nil
}

// Deploy creates the workloads in p.Namespace, printing progress to out.
func Deploy(ctx context.Context, cs kubernetes.Interface, p Params, otherNode bool, out io.Writer) error {
	if err := ensureNamespace(ctx, cs, p.Namespace); err != nil {
		return err
	}
	deps, ds, svcs := p.Objects(otherNode)
	for _, s := range svcs {
		fmt.Fprintf(out, "✨ [%s] Deploying %s service...\n", p.Namespace, s.Name)
		if err := create(ctx, "service "+s.Name, cs.CoreV1().Services(p.Namespace).Create, s); err != nil {
			return err
		}
	}
	for _, d := range deps {
		fmt.Fprintf(out, "✨ [%s] Deploying %s deployment...\n", p.Namespace, d.Name)
		if err := create(ctx, "deployment "+d.Name, cs.AppsV1().Deployments(p.Namespace).Create, d); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "✨ [%s] Deploying %s daemonset...\n", p.Namespace, ds.Name)
	return create(ctx, "daemonset "+ds.Name, cs.AppsV1().DaemonSets(p.Namespace).Create, ds)
}

// Pod is a pod the test talks to or from.
type Pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Node      string `json:"node"`
	IP        string `json:"ip"`
}

// String is "ns/name (node, ip)".
func (p Pod) String() string { return fmt.Sprintf("%s/%s (%s, %s)", p.Namespace, p.Name, p.Node, p.IP) }

// Ref is "ns/name".
func (p Pod) Ref() string { return p.Namespace + "/" + p.Name }

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readyPods lists the Ready pods matching selector, sorted by name.
func readyPods(ctx context.Context, cs kubernetes.Interface, ns, selector string) ([]Pod, error) {
	pl, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("list pods %s in %s: %w", selector, ns, err)
	}
	var out []Pod
	for i := range pl.Items {
		p := &pl.Items[i]
		if podReady(p) {
			out = append(out, Pod{Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName, IP: p.Status.PodIP})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// poll calls f every interval until it returns done, an error, or timeout
// passes; on timeout the error names what was still missing.
func poll(ctx context.Context, timeout, interval time.Duration, what string, f func() (done bool, missing string, err error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		done, missing, err := f()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not ready after %s: %s", what, timeout, missing)
		case <-time.After(interval):
		}
	}
}

// Node is a node of the cluster and what its agent runs.
type Node struct {
	Name    string `json:"name"`
	IP      string `json:"ip"`
	PodCIDR string `json:"podCIDR"`
}

func nodeAddress(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeExternalIP {
			return a.Address
		}
	}
	return ""
}

// ListNodes lists the cluster's nodes, sorted by name.
func ListNodes(ctx context.Context, cs kubernetes.Interface) ([]Node, error) {
	nl, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var out []Node
	for i := range nl.Items {
		n := &nl.Items[i]
		out = append(out, Node{Name: n.Name, IP: nodeAddress(n), PodCIDR: n.Spec.PodCIDR})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Service is a Service of the test with its address and backends.
type Service struct {
	Name      string `json:"name"`
	ClusterIP string `json:"clusterIP"`
	Port      int    `json:"port"`
	NodePort  int    `json:"nodePort,omitempty"`
	Backends  []Pod  `json:"backends"`
}

// WaitReady waits until every workload is Ready and every Service has its
// backends, and returns what the tests need to know about them.
func WaitReady(ctx context.Context, cs kubernetes.Interface, p Params, nodes []Node, otherNode bool) (*Workloads, error) {
	w := &Workloads{Hosts: map[string]Pod{}, Services: map[string]*Service{}}
	ns := p.Namespace
	want := []string{NameClient, NameClient2, NameEchoSameNode}
	if otherNode {
		want = append(want, NameEchoOtherNode)
	}
	err := poll(ctx, p.ReadyTimeout, time.Second, "connectivity test workloads", func() (bool, string, error) {
		var missing []string
		got := map[string]Pod{}
		for _, name := range want {
			pods, err := readyPods(ctx, cs, ns, labelName+"="+name)
			if err != nil {
				return false, "", err
			}
			if len(pods) == 0 {
				missing = append(missing, "deployment "+name+" has no Ready pod")
				continue
			}
			got[name] = pods[0]
		}
		hosts, err := readyPods(ctx, cs, ns, labelName+"="+NameHostNetns)
		if err != nil {
			return false, "", err
		}
		w.Hosts = map[string]Pod{}
		for _, h := range hosts {
			w.Hosts[h.Node] = h
		}
		for _, n := range nodes {
			if _, ok := w.Hosts[n.Name]; !ok {
				missing = append(missing, fmt.Sprintf("daemonset %s has no Ready pod on %s", NameHostNetns, n.Name))
			}
		}
		if len(missing) > 0 {
			return false, strings.Join(missing, "; "), nil
		}
		w.Client, w.Client2, w.EchoSame = got[NameClient], got[NameClient2], got[NameEchoSameNode]
		if otherNode {
			o := got[NameEchoOtherNode]
			w.EchoOther = &o
		}
		return true, "", nil
	})
	if err != nil {
		return nil, err
	}
	if w.EchoSame.Node != w.Client.Node || w.Client2.Node != w.Client.Node {
		return nil, fmt.Errorf("placement: %s on %s, %s on %s, %s on %s: the affinity rules were not honoured",
			w.Client.Name, w.Client.Node, w.Client2.Name, w.Client2.Node, w.EchoSame.Name, w.EchoSame.Node)
	}
	if w.EchoOther != nil && w.EchoOther.Node == w.Client.Node {
		return nil, fmt.Errorf("placement: %s runs on %s like %s: the anti-affinity rule was not honoured", w.EchoOther.Name, w.EchoOther.Node, w.Client.Name)
	}
	svcs := []string{NameEchoSameNode, NameEcho}
	if otherNode {
		svcs = append(svcs, NameEchoOtherNode)
	}
	err = poll(ctx, p.ReadyTimeout, time.Second, "connectivity test services", func() (bool, string, error) {
		var missing []string
		for _, name := range svcs {
			s, err := serviceWithBackends(ctx, cs, ns, name, w)
			if err != nil {
				return false, "", err
			}
			wantN := 1
			if name == NameEcho {
				wantN = 1
				if otherNode {
					wantN = 2
				}
			}
			if len(s.Backends) < wantN {
				missing = append(missing, fmt.Sprintf("service %s has %d ready endpoints, want %d", name, len(s.Backends), wantN))
				continue
			}
			w.Services[name] = s
		}
		return len(missing) == 0, strings.Join(missing, "; "), nil
	})
	if err != nil {
		return nil, err
	}
	return w, nil
}

// serviceWithBackends reads a Service and its ready endpoints from its
// EndpointSlices, matched to the echo pods.
func serviceWithBackends(ctx context.Context, cs kubernetes.Interface, ns, name string, w *Workloads) (*Service, error) {
	svc, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get service %s/%s: %w", ns, name, err)
	}
	s := &Service{Name: name, ClusterIP: svc.Spec.ClusterIP}
	if len(svc.Spec.Ports) > 0 {
		s.Port, s.NodePort = int(svc.Spec.Ports[0].Port), int(svc.Spec.Ports[0].NodePort)
	}
	sl, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + name})
	if err != nil {
		return nil, fmt.Errorf("list endpointslices of %s/%s: %w", ns, name, err)
	}
	byIP := map[string]Pod{w.EchoSame.IP: w.EchoSame}
	if w.EchoOther != nil {
		byIP[w.EchoOther.IP] = *w.EchoOther
	}
	for _, es := range sl.Items {
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				if p, ok := byIP[a]; ok {
					s.Backends = append(s.Backends, p)
				}
			}
		}
	}
	sort.Slice(s.Backends, func(i, j int) bool { return s.Backends[i].Name < s.Backends[j].Name })
	return s, nil
}

// Workloads are the test's pods and Services, once Ready.
type Workloads struct {
	Client, Client2 Pod
	EchoSame        Pod
	EchoOther       *Pod           // nil on a single-node cluster
	Hosts           map[string]Pod // node -> host-network pod
	Services        map[string]*Service
}

// Cleanup deletes the test namespace (and with it everything the test made)
// and waits until it is gone.
func Cleanup(ctx context.Context, cs kubernetes.Interface, ns string, timeout time.Duration) error {
	fg := metav1.DeletePropagationForeground
	err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{PropagationPolicy: &fg})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete namespace %s: %w", ns, err)
	}
	return poll(ctx, timeout, time.Second, "delete namespace "+ns, func() (bool, string, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, "", err
		}
		return false, "namespace still terminating", nil
	})
}
