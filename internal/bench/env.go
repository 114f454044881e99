package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/lab"
	"glia.dev/glia/internal/lab/noderunner"
)

// Modes: what a node runs.
const (
	ModeEBPF       = "ebpf"                // kube-proxy replacement, eBPF masquerade, BPF host routing
	ModeIPTables   = "kube-proxy-iptables" // legacy host routing, iptables masquerade, kube-proxy (iptables)
	ModeNFTables   = "kube-proxy-nftables" // as above with kube-proxy in nftables mode
	ModeLegacy     = "legacy"              // the legacy datapath: same node config as kube-proxy-iptables
	ModeVethFloor  = "veth-floor"          // two namespaces joined by a bare veth pair
	benchNamespace = "bench"
	modeLabel      = "bench.glia.dev/mode"
)

// ebpfNodeConfig turns on the eBPF datapath on nodes labelled ebpf.
const ebpfNodeConfig = `apiVersion: glia.dev/v1alpha1
kind: GliaNodeConfig
metadata:
  namespace: glia-system
  name: bench-ebpf-nodes
spec:
  nodeSelector:
    matchLabels:
      bench.glia.dev/mode: ebpf
  defaults:
    kube-proxy-replacement: "true"
    enable-bpf-masquerade: "true"
`

// nodeSpec is a lab node the scenario wants: its mode and its role.
type nodeSpec struct {
	mode string // ModeEBPF, ModeIPTables (also legacy), ModeNFTables
	role string // e.g. "client", "backends", "server-b"
}

// env is a lab brought up for one scenario.
type env struct {
	p      *progress
	lab    *lab.Lab
	cs     *kubernetes.Clientset
	nodes  []string            // lab-node-i per nodeSpec
	specs  []nodeSpec          // as asked
	pods   map[string]*podInfo // by pod name
	srv    []*servers
	closed bool
	// unavailable are modes the lab could not provide, and why.
	unavailable map[string]error
}

// has reports whether mode is measurable in this lab.
func (e *env) has(mode string) bool { return e.unavailable[mode] == nil }

type podInfo struct {
	name, node, ip, nsPath string
}

// upEnv brings up a lab with one node per spec: nodes not in ebpf mode
// run the legacy datapath and kube-proxy.
func upEnv(ctx context.Context, l *lab.Lab, p *progress, specs []nodeSpec) (*env, error) {
	o := lab.UpOptions{Nodes: len(specs), Set: map[string]string{
		"kube-proxy-replacement": "false", "enable-bpf-masquerade": "false",
	}, NodeLabels: map[string]map[string]string{}, Apply: [][]byte{[]byte(ebpfNodeConfig)}}
	e := &env{p: p, lab: l, specs: specs, pods: map[string]*podInfo{}, unavailable: map[string]error{}}
	for i, s := range specs {
		name := lab.NodeName(i + 1)
		e.nodes = append(e.nodes, name)
		labels := map[string]string{modeLabel: s.mode}
		if s.mode == ModeNFTables {
			labels[lab.KubeProxyModeLabel] = "nftables"
		}
		o.NodeLabels[name] = labels
	}
	p.say("bringing up a %d-node lab: %s", len(specs), e.describeNodes())
	if err := l.Up(ctx, o); err != nil {
		return e, err
	}
	_, cfg, err := l.Clients()
	if err != nil {
		return e, err
	}
	cfg.QPS, cfg.Burst = 500, 1000 // thousands of Services
	if e.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return e, err
	}
	return e, e.checkModes(ctx)
}

func (e *env) describeNodes() string {
	var parts []string
	for i, s := range e.specs {
		parts = append(parts, fmt.Sprintf("%s=%s/%s", e.nodes[i], s.mode, s.role))
	}
	return strings.Join(parts, " ")
}

// node returns the node of the first spec with mode and role.
func (e *env) node(mode, role string) string {
	for i, s := range e.specs {
		if s.mode == mode && s.role == role {
			return e.nodes[i]
		}
	}
	return ""
}

// checkModes verifies every node runs what its mode says: the agent's
// kube-proxy replacement and host routing, and kube-proxy's mode.
func (e *env) checkModes(ctx context.Context) error {
	for i, s := range e.specs {
		node := e.nodes[i]
		var as api.Status
		if err := e.lab.AgentClient(node).Status(ctx, &as); err != nil {
			return fmt.Errorf("status of %s: %w", node, err)
		}
		wantKPR := s.mode == ModeEBPF
		if as.KubeProxyReplacement.Enabled != wantKPR {
			return fmt.Errorf("%s should run mode %s but its agent has kube-proxy replacement %t (%s)",
				node, s.mode, as.KubeProxyReplacement.Enabled, as.KubeProxyReplacement.Reason)
		}
		if wantKPR && as.HostRouting.Mode != "BPF" {
			return fmt.Errorf("%s runs host routing %s, not BPF: %s", node, as.HostRouting.Mode, as.HostRouting.Reason)
		}
		if s.mode == ModeNFTables {
			kp, _ := e.lab.KubeProxyComponent(node)
			if !argsHave(kp.Args, "--proxy-mode=nftables") {
				got := "no kube-proxy"
				for _, a := range kp.Args {
					if strings.HasPrefix(a, "--proxy-mode=") {
						got = a
					}
				}
				e.unavailable[s.mode] = fmt.Errorf("%w: it ran kube-proxy on %s with %s", errNoNFTables, node, got)
			}
		}
	}
	return nil
}

var errNoNFTables = errors.New("kube-proxy-nftables is not available: the lab does not start kube-proxy in nftables mode (see BENCHMARKS.md for the lab change)")

func argsHave(args []string, a string) bool {
	for _, x := range args {
		if x == a {
			return true
		}
	}
	return false
}

// addPods creates sleeping pods (glia bench serves and connects from
// their network namespaces itself) and waits for them to run.
func (e *env) addPods(ctx context.Context, want map[string]string) error {
	if _, err := e.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}},
		metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	for name, node := range want {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNamespace, Labels: map[string]string{"app": "glia-bench"}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "main", Image: "glia/client"}},
				TerminationGracePeriodSeconds: new(int64)},
		}
		if _, err := e.cs.CoreV1().Pods(benchNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create pod %s: %w", name, err)
		}
	}
	e.p.say("waiting for %d pods to run", len(want))
	deadline := time.Now().Add(2 * time.Minute)
	for name, node := range want {
		for {
			pod, err := e.cs.CoreV1().Pods(benchNamespace).Get(ctx, name, metav1.GetOptions{})
			if err == nil && pod.Status.PodIP != "" && pod.Status.Phase == corev1.PodRunning {
				pid, err := noderunner.FindPodPID(e.lab.Layout().RunnerStateDir(node), benchNamespace, name)
				if err == nil {
					e.pods[name] = &podInfo{name: name, node: node, ip: pod.Status.PodIP, nsPath: fmt.Sprintf("/proc/%d/ns/net", pid)}
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("pod %s on %s did not run in 2 minutes", name, node)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
	return nil
}

// serve starts the bench servers in pods' namespaces.
func (e *env) serve(names ...string) error {
	for _, n := range names {
		if err := e.serveIn(e.pods[n].nsPath, n); err != nil {
			return err
		}
	}
	return nil
}

// serveIn starts bench servers answering with name in the network
// namespace at nsPath; close stops them.
func (e *env) serveIn(nsPath, name string) error {
	s, err := startServers(nsPath, name)
	if err != nil {
		return err
	}
	e.srv = append(e.srv, s)
	return nil
}

// close stops the servers and takes the lab down.
func (e *env) close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	var errs []error
	for _, s := range e.srv {
		errs = append(errs, s.Close())
	}
	e.p.say("taking the lab down")
	// The run's context may be cancelled (Ctrl-C): tear down regardless.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	errs = append(errs, e.lab.Down(ctx))
	return errors.Join(errs...)
}

// benchPort is a port of the bench Services: its name, the Service port
// and the servers' port behind it.
type benchPort struct {
	name         string
	port, target int32
}

// Ports of the bench Services. The Services a scenario creates by the
// thousand have connPorts only: a port more on each would multiply the
// rules kube-proxy writes (and so its cost) without adding to what is
// measured; request-response's few Services carry all three.
var (
	connPorts = []benchPort{{"conn", 80, portConn}}
	allPorts  = []benchPort{{"conn", 80, portConn}, {"rr", 81, portRR}, {"stream", 82, portStream}}
)

// benchService is a bench Service without a selector.
func benchService(name string, ports []benchPort) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNamespace},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP},
	}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: p.name, Port: p.port,
			Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(p.target)})
	}
	return s
}

// benchSlice is the EndpointSlice of bench Service svc.
func benchSlice(svc string, ips []string, ports []benchPort) *discoveryv1.EndpointSlice {
	ready := true
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc + "-bench", Namespace: benchNamespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "bench.glia.dev",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	for _, p := range ports {
		name, port, proto := p.name, p.target, corev1.ProtocolTCP
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: &name, Port: &port, Protocol: &proto})
	}
	return s
}

// createService creates Service name with ports and endpoints ips and
// returns its ClusterIP.
func (e *env) createService(ctx context.Context, name string, ips []string, ports []benchPort) (string, error) {
	svc, err := e.cs.CoreV1().Services(benchNamespace).Create(ctx, benchService(name, ports), metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create service %s: %w", name, err)
	}
	if _, err := e.cs.DiscoveryV1().EndpointSlices(benchNamespace).Create(ctx, benchSlice(name, ips, ports), metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create endpointslice of %s: %w", name, err)
	}
	return svc.Spec.ClusterIP, nil
}

// setEndpoints replaces the endpoints of bench Service name (one with
// connPorts).
func (e *env) setEndpoints(ctx context.Context, name string, ips []string) error {
	cur, err := e.cs.DiscoveryV1().EndpointSlices(benchNamespace).Get(ctx, name+"-bench", metav1.GetOptions{})
	if err != nil {
		return err
	}
	s := benchSlice(name, ips, connPorts)
	cur.Endpoints = s.Endpoints
	_, err = e.cs.DiscoveryV1().EndpointSlices(benchNamespace).Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// createServices creates Services prefix-i (with connPorts) for i in
// [from, to) with parallel writers, and returns their ClusterIPs in order.
func (e *env) createServices(ctx context.Context, prefix string, from, to int, ips []string) ([]string, error) {
	out := make([]string, to-from)
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		next = from
		done int
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				bad := len(errs) > 0
				mu.Unlock()
				if i >= to || bad || ctx.Err() != nil {
					return
				}
				ip, err := e.createService(ctx, fmt.Sprintf("%s-%05d", prefix, i), ips, connPorts)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				out[i-from] = ip
				done++
				if done%500 == 0 {
					e.p.status("created %d/%d Services", done, to-from)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return out, errors.Join(errs...)
}

// deleteServices deletes every bench Service and EndpointSlice.
func (e *env) deleteServices(ctx context.Context) error {
	list, err := e.cs.CoreV1().Services(benchNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	names := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range names {
				if err := e.cs.CoreV1().Services(benchNamespace).Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for _, s := range list.Items {
		names <- s.Name
	}
	close(names)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return e.cs.DiscoveryV1().EndpointSlices(benchNamespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
}
