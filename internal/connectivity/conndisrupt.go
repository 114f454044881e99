package connectivity

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
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

// Names of the conn-disrupt workloads.
const (
	NameConnServer     = "conn-disrupt-server"
	NameConnService    = "conn-disrupt"
	NameConnClientPfx  = "conn-disrupt-client-"
	NameConnConfigMap  = "conn-disrupt"
	kindConnServer     = "conn-disrupt-server"
	kindConnClient     = "conn-disrupt-client"
	connConfigMapKey   = "setup"
	connStaleAfter     = 10 * time.Second
	connSetupPollEvery = time.Second
)

// ConnDisruptParams configure the conn-disrupt test.
type ConnDisruptParams struct {
	Image string
	// Command runs `glia connectivity` in the image: the lab passes the
	// absolute path of its glia binary; a real cluster's image has glia in
	// its PATH.
	Command         []string
	Port            int
	RequestInterval time.Duration
	StallAfter      time.Duration
	RequestTimeout  time.Duration
	// ExternalTargets are conn-disrupt servers outside the cluster that
	// every client holds connections to as well: the masqueraded flows
	// of pods to the world.
	ExternalTargets []ConnTarget
	// StateDir holds each client's state file, in a directory of its own
	// (<StateDir>/glia-conn-disrupt-<pod>/state.json).
	StateDir string
}

// DefaultConnDisruptParams are the flags' defaults.
func DefaultConnDisruptParams() ConnDisruptParams {
	return ConnDisruptParams{
		Image:           "glia/client",
		Command:         []string{"glia", "connectivity"},
		Port:            8000,
		RequestInterval: 200 * time.Millisecond,
		StallAfter:      time.Second,
		RequestTimeout:  2 * time.Second,
		StateDir:        "/tmp",
	}
}

// ConnSetup is what setup records in the ConfigMap for the check.
type ConnSetup struct {
	Time    time.Time          `json:"time"`
	Clients []ConnSetupClient  `json:"clients"`
	Params  ConnDisruptSummary `json:"params"`
}

// ConnDisruptSummary records the thresholds of a setup.
type ConnDisruptSummary struct {
	StallAfter      time.Duration `json:"stallAfter"`
	RequestInterval time.Duration `json:"requestInterval"`
}

// ConnSetupClient is one client pod.
type ConnSetupClient struct {
	Pod       Pod          `json:"pod"`
	UID       string       `json:"uid"`
	StatePath string       `json:"statePath"`
	Targets   []ConnTarget `json:"targets"`
}

func (p Params) connServerDS() *appsv1.DaemonSet {
	cd := p.ConnDisrupt
	one := int64(1)
	spec := corev1.PodSpec{
		TerminationGracePeriodSeconds: &one,
		Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		Containers: []corev1.Container{{
			Name:    "server",
			Image:   cd.Image,
			Command: append(append([]string(nil), cd.Command...), ConnServerArgs(cd.Port)...),
			Ports:   []corev1.ContainerPort{{Name: "conn", ContainerPort: int32(cd.Port), Protocol: corev1.ProtocolTCP}},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(cd.Port))}},
				PeriodSeconds: 2,
			},
		}},
	}
	return &appsv1.DaemonSet{
		ObjectMeta: meta(p.Namespace, NameConnServer, kindConnServer),
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{labelName: NameConnServer}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels(NameConnServer, kindConnServer)}, Spec: spec},
		},
	}
}

func (p Params) connService() *corev1.Service {
	cd := p.ConnDisrupt
	return &corev1.Service{ObjectMeta: meta(p.Namespace, NameConnService, kindConnServer), Spec: corev1.ServiceSpec{
		Selector: map[string]string{labelName: NameConnServer},
		Ports:    []corev1.ServicePort{{Name: "conn", Port: int32(cd.Port), TargetPort: intstr.FromInt32(int32(cd.Port)), Protocol: corev1.ProtocolTCP}},
	}}
}

func (p Params) connClientPod(node string, cfg ConnClientConfig) *corev1.Pod {
	cd := p.ConnDisrupt
	one := int64(1)
	return &corev1.Pod{
		ObjectMeta: meta(p.Namespace, cfg.Name, kindConnClient),
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &one,
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
					MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
				}}},
			}},
			Containers: []corev1.Container{{
				Name:    "client",
				Image:   cd.Image,
				Command: append(append([]string(nil), cd.Command...), ConnClientArgs(cfg)...),
			}},
		},
	}
}

// ConnDisruptSetup deploys the conn-disrupt servers (one per node) and
// Service, then one client per node whose targets are the servers on the
// other nodes and the Service; it waits until every long-lived connection
// is up and a request to every target succeeded, and records the setup in
// ConfigMap conn-disrupt. An earlier setup's clients are replaced.
func ConnDisruptSetup(ctx context.Context, cs kubernetes.Interface, ex Executor, p Params, nodes []Node, out io.Writer) (*ConnSetup, error) {
	ns := p.Namespace
	cd := p.ConnDisrupt
	if err := ensureNamespace(ctx, cs, ns); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "✨ [%s] Deploying %s daemonset and %s service...\n", ns, NameConnServer, NameConnService)
	if err := create(ctx, "daemonset "+NameConnServer, cs.AppsV1().DaemonSets(ns).Create, p.connServerDS()); err != nil {
		return nil, err
	}
	if err := create(ctx, "service "+NameConnService, cs.CoreV1().Services(ns).Create, p.connService()); err != nil {
		return nil, err
	}
	var servers []Pod
	err := poll(ctx, p.ReadyTimeout, connSetupPollEvery, NameConnServer, func() (bool, string, error) {
		var err error
		servers, err = readyPods(ctx, cs, ns, labelName+"="+NameConnServer)
		if err != nil {
			return false, "", err
		}
		on := map[string]bool{}
		for _, s := range servers {
			on[s.Node] = true
		}
		var missing []string
		for _, n := range nodes {
			if !on[n.Name] {
				missing = append(missing, n.Name)
			}
		}
		return len(missing) == 0, "no Ready server on " + strings.Join(missing, ", "), nil
	})
	if err != nil {
		return nil, err
	}
	svc, err := cs.CoreV1().Services(ns).Get(ctx, NameConnService, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get service %s: %w", NameConnService, err)
	}
	// Replace the clients of an earlier setup.
	if err := deletePods(ctx, cs, ns, labelKind+"="+kindConnClient, p.ReadyTimeout); err != nil {
		return nil, err
	}
	setup := &ConnSetup{Params: ConnDisruptSummary{StallAfter: cd.StallAfter, RequestInterval: cd.RequestInterval}}
	for _, n := range nodes {
		name := NameConnClientPfx + n.Name
		cfg := ConnClientConfig{
			Name:            name,
			StatePath:       path.Join(cd.StateDir, "glia-conn-disrupt-"+name, "state.json"),
			RequestInterval: cd.RequestInterval,
			StallAfter:      cd.StallAfter,
			RequestTimeout:  cd.RequestTimeout,
		}
		for _, s := range servers {
			if s.Node != n.Name {
				cfg.Targets = append(cfg.Targets, ConnTarget{
					Name: fmt.Sprintf("pod %s (%s)", s.Ref(), s.Node),
					Addr: netipJoin(s.IP, cd.Port),
				})
			}
		}
		cfg.Targets = append(cfg.Targets, ConnTarget{
			Name: fmt.Sprintf("service %s/%s", ns, NameConnService),
			Addr: netipJoin(svc.Spec.ClusterIP, cd.Port),
		})
		for _, x := range cd.ExternalTargets {
			cfg.Targets = append(cfg.Targets, ConnTarget{Name: "outside " + x.Name, Addr: x.Addr})
		}
		fmt.Fprintf(out, "✨ [%s] Deploying %s on %s (%d targets)...\n", ns, name, n.Name, len(cfg.Targets))
		pod, err := cs.CoreV1().Pods(ns).Create(ctx, p.connClientPod(n.Name, cfg), metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create pod %s: %w", name, err)
		}
		setup.Clients = append(setup.Clients, ConnSetupClient{
			Pod: Pod{Namespace: ns, Name: name, Node: n.Name}, UID: string(pod.UID), StatePath: cfg.StatePath, Targets: cfg.Targets,
		})
	}
	// Wait until every client runs, holds all its connections and had a
	// request answered by every target.
	err = poll(ctx, p.ReadyTimeout, connSetupPollEvery, "conn-disrupt clients", func() (bool, string, error) {
		var missing []string
		for i := range setup.Clients {
			c := &setup.Clients[i]
			pod, err := cs.CoreV1().Pods(ns).Get(ctx, c.Pod.Name, metav1.GetOptions{})
			if err != nil || pod.Status.Phase != corev1.PodRunning {
				missing = append(missing, c.Pod.Name+" is not running")
				continue
			}
			c.Pod.IP = pod.Status.PodIP
			st, err := readConnState(ctx, ex, *c)
			if err != nil {
				missing = append(missing, err.Error())
				continue
			}
			for _, ts := range st.Targets {
				if !ts.Connected || ts.Requests-ts.Failed == 0 {
					missing = append(missing, fmt.Sprintf("%s -> %s (%s): connected=%t, %d/%d requests answered",
						c.Pod.Name, ts.Name, ts.Addr, ts.Connected, ts.Requests-ts.Failed, ts.Requests))
				}
			}
		}
		return len(missing) == 0, strings.Join(missing, "; "), nil
	})
	if err != nil {
		return nil, err
	}
	setup.Time = time.Now().UTC()
	b, err := json.Marshal(setup)
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{ObjectMeta: meta(ns, NameConnConfigMap, "conn-disrupt"), Data: map[string]string{connConfigMapKey: string(b)}}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		_, err = cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
		if err != nil {
			return nil, fmt.Errorf("update configmap %s: %w", NameConnConfigMap, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("create configmap %s: %w", NameConnConfigMap, err)
	}
	n := 0
	for _, c := range setup.Clients {
		n += len(c.Targets)
	}
	fmt.Fprintf(out, "ℹ️  [%s] conn-disrupt: %d clients hold %d long-lived connections and send a request to each target every %s\n",
		ns, len(setup.Clients), n, cd.RequestInterval)
	return setup, nil
}

func deletePods(ctx context.Context, cs kubernetes.Interface, ns, selector string, timeout time.Duration) error {
	zero := int64(0)
	if err := cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero},
		metav1.ListOptions{LabelSelector: selector}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pods %s: %w", selector, err)
	}
	return poll(ctx, timeout, time.Second, "delete pods "+selector, func() (bool, string, error) {
		pl, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, "", err
		}
		return len(pl.Items) == 0, fmt.Sprintf("%d pods left", len(pl.Items)), nil
	})
}

func readConnState(ctx context.Context, ex Executor, c ConnSetupClient) (*ConnState, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := []string{"cat", c.StatePath}
	stdout, stderr, err := ex.ExecPod(ctx, c.Pod.Namespace, c.Pod.Name, cmd)
	if err != nil {
		return nil, fmt.Errorf("read the state of %s (%s in the pod): %w: %s", c.Pod.Name, shellJoin(cmd), err, strings.TrimSpace(stderr))
	}
	var st ConnState
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		return nil, fmt.Errorf("state of %s: %w", c.Pod.Name, err)
	}
	return &st, nil
}

// LoadConnSetup reads the setup recorded in the test namespace.
func LoadConnSetup(ctx context.Context, cs kubernetes.Interface, ns string) (*ConnSetup, error) {
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, NameConnConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("no conn-disrupt setup in namespace %s (ConfigMap %s): run with --conn-disrupt-setup first", ns, NameConnConfigMap)
	}
	if err != nil {
		return nil, fmt.Errorf("get configmap %s/%s: %w", ns, NameConnConfigMap, err)
	}
	var s ConnSetup
	if err := json.Unmarshal([]byte(cm.Data[connConfigMapKey]), &s); err != nil {
		return nil, fmt.Errorf("configmap %s/%s: %w", ns, NameConnConfigMap, err)
	}
	return &s, nil
}

// ConnVerdict is the outcome of one client's target.
type ConnVerdict struct {
	Resets, Stalls, FailedRequests, ConnectFailures int
	Requests                                        uint64
	Connections                                     int
	// Problems name every interruption with its time.
	Problems []string
}

// OK says whether the target was never interrupted.
func (v ConnVerdict) OK() bool { return len(v.Problems) == 0 }

// EvaluateConn judges one target's state: every reset, stall (including one
// still going on when the state was written) and failed request is a
// problem; so is a connection down when the state was written.
func EvaluateConn(ts ConnTargetState, updated time.Time, stallAfter time.Duration) ConnVerdict {
	v := ConnVerdict{Requests: ts.Requests, Connections: ts.Connections}
	for _, ev := range ts.Events {
		at := ev.Time.UTC().Format("15:04:05.000")
		switch ev.Kind {
		case EventReset:
			v.Resets++
			v.Problems = append(v.Problems, fmt.Sprintf("%s connection reset after %s up: %s", at, ev.Duration.Round(time.Millisecond), ev.Detail))
		case EventStall:
			v.Stalls++
			v.Problems = append(v.Problems, fmt.Sprintf("%s connection stalled for %s (%s)", at, ev.Duration.Round(time.Millisecond), ev.Detail))
		case EventRequestFailed:
			v.FailedRequests++
			v.Problems = append(v.Problems, fmt.Sprintf("%s request failed after %s: %s", at, ev.Duration.Round(time.Millisecond), ev.Detail))
		case EventConnectFailed:
			v.ConnectFailures++
			v.Problems = append(v.Problems, fmt.Sprintf("%s re-connect failed: %s", at, ev.Detail))
		default:
			v.Problems = append(v.Problems, fmt.Sprintf("%s %s: %s", at, ev.Kind, ev.Detail))
		}
	}
	if ts.EventsDropped > 0 {
		v.Problems = append(v.Problems, fmt.Sprintf("%d more events not kept", ts.EventsDropped))
	}
	if uint64(v.FailedRequests) < ts.Failed {
		// Events beyond the bound: count the failures the counter saw.
		v.FailedRequests = int(ts.Failed)
	}
	switch {
	case !ts.StalledSince.IsZero():
		v.Stalls++
		v.Problems = append(v.Problems, fmt.Sprintf("%s connection stalled since, %s at the last update",
			ts.StalledSince.UTC().Format("15:04:05.000"), updated.Sub(ts.StalledSince).Round(time.Millisecond)))
	case ts.Connected && updated.Sub(ts.LastTick) > stallAfter:
		v.Stalls++
		v.Problems = append(v.Problems, fmt.Sprintf("%s connection stalled since, %s at the last update",
			ts.LastTick.UTC().Format("15:04:05.000"), updated.Sub(ts.LastTick).Round(time.Millisecond)))
	case !ts.Connected:
		v.Problems = append(v.Problems, "no long-lived connection up at the last update")
	}
	return v
}

// ConnDisruptTest is the test that checks a setup: an action per client and
// target.
func (e *Env) ConnDisruptTest(setup *ConnSetup, loadErr error) Test {
	return Test{Name: TestConnDisrupt, Run: func(ctx context.Context, t *T) {
		if loadErr != nil {
			t.Action("check", "conn-disrupt", "setup", func(ctx context.Context, r *ActionResult) error { return loadErr })
			return
		}
		var totals ConnVerdict
		for _, c := range setup.Clients {
			now := time.Now()
			pod, perr := e.Client.CoreV1().Pods(c.Pod.Namespace).Get(ctx, c.Pod.Name, metav1.GetOptions{})
			st, serr := readConnState(ctx, e.Exec, c)
			src := fmt.Sprintf("%s (%s, %s)", c.Pod.Ref(), c.Pod.Node, c.Pod.IP)
			for i, tgt := range c.Targets {
				t.Action("conn", src, fmt.Sprintf("%s %s", tgt.Name, tgt.Addr), func(ctx context.Context, r *ActionResult) error {
					r.Where, r.Command = "pod "+c.Pod.Ref(), shellJoin([]string{"cat", c.StatePath})
					switch {
					case perr != nil:
						return fmt.Errorf("client pod %s: %w", c.Pod.Ref(), perr)
					case string(pod.UID) != c.UID:
						return fmt.Errorf("client pod %s was replaced since the setup (uid %s, was %s)", c.Pod.Ref(), pod.UID, c.UID)
					case pod.Status.Phase != corev1.PodRunning:
						return fmt.Errorf("client pod %s is %s", c.Pod.Ref(), pod.Status.Phase)
					case serr != nil:
						return serr
					case i >= len(st.Targets) || st.Targets[i].Addr != tgt.Addr:
						return fmt.Errorf("state of %s does not list target %s", c.Pod.Name, tgt.Addr)
					case now.Sub(st.Updated) > connStaleAfter:
						return fmt.Errorf("the client last wrote its state %s ago (at %s): it is stuck or its clock is off",
							now.Sub(st.Updated).Round(time.Second), st.Updated.UTC().Format(time.RFC3339))
					}
					v := EvaluateConn(st.Targets[i], st.Updated, setup.Params.StallAfter)
					totals.Resets += v.Resets
					totals.Stalls += v.Stalls
					totals.FailedRequests += v.FailedRequests
					totals.Requests += v.Requests
					totals.Connections += v.Connections
					r.Output = fmt.Sprintf("since %s: %d connection(s) opened, %d resets, %d stalls > %s, %d requests, %d failed",
						setup.Time.Format("15:04:05"), v.Connections, v.Resets, v.Stalls, setup.Params.StallAfter, v.Requests, v.FailedRequests)
					if !v.OK() {
						return fmt.Errorf("interrupted: %s", strings.Join(v.Problems, "\n"))
					}
					return nil
				})
			}
		}
		e.ConnTotals = &totals
	}}
}

// ConnDisruptCleanup removes the conn-disrupt workloads (the rest of the
// namespace stays).
func ConnDisruptCleanup(ctx context.Context, cs kubernetes.Interface, ns string, timeout time.Duration) error {
	var errs []string
	if err := cs.CoreV1().ConfigMaps(ns).Delete(ctx, NameConnConfigMap, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, err.Error())
	}
	if err := cs.AppsV1().DaemonSets(ns).Delete(ctx, NameConnServer, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, err.Error())
	}
	if err := cs.CoreV1().Services(ns).Delete(ctx, NameConnService, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, err.Error())
	}
	if err := deletePods(ctx, cs, ns, labelKind+"="+kindConnClient, timeout); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return fmt.Errorf("clean up conn-disrupt: %s", strings.Join(errs, "; "))
	}
	return nil
}
