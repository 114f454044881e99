package connectivity

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/health"
	"glia.dev/glia/internal/metrics"
)

// Agents reaches the glia-agent of each node.
type Agents interface {
	// Get fetches path (api.PathStatus, api.PathHealth) from the agent
	// on node and decodes its JSON answer into out.
	Get(ctx context.Context, node, path string, out any) error
	// Metrics returns the agent's Prometheus exposition text; nodeIP is the
	// node's address, where the agent serves it.
	Metrics(ctx context.Context, node, nodeIP string) (string, error)
}

// SocketAgents reaches agents through their unix sockets, and their metrics
// over HTTP on the node's address: the lab, where this machine reaches both.
type SocketAgents struct {
	// Socket returns the agent socket of node.
	Socket func(node string) string
	// MetricsPort defaults to metrics.DefaultPort.
	MetricsPort int
}

// Get does GET path on the node's agent socket, with the agent API's
// one client.
func (a SocketAgents) Get(ctx context.Context, node, path string, out any) error {
	sock := a.Socket(node)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := api.NewClient(sock).Get(ctx, path, out); err != nil {
		return fmt.Errorf("glia-agent on %s (socket %s): GET %s: %w", node, sock, path, err)
	}
	return nil
}

// Metrics does GET http://nodeIP:9962/metrics.
func (a SocketAgents) Metrics(ctx context.Context, node, nodeIP string) (string, error) {
	port := a.MetricsPort
	if port == 0 {
		port = metrics.DefaultPort
	}
	u := "http://" + net.JoinHostPort(nodeIP, strconv.Itoa(port)) + "/metrics"
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("metrics of glia-agent on %s: %w", node, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return "", fmt.Errorf("metrics of glia-agent on %s: GET %s: %w", node, u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("metrics of glia-agent on %s: GET %s: %s", node, u, resp.Status)
	}
	return string(b), nil
}

func snippet(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// ExecAgents reaches agents on a real cluster: it runs curl against the
// agent socket inside the glia-agent pod of the node, and curl against the
// metrics port in the node's network namespace.
type ExecAgents struct {
	Exec      Executor
	Client    kubernetes.Interface
	Namespace string // the agents' namespace, e.g. glia-system
	Selector  string // label selector of the agent pods
	Socket    string // socket path inside the agent pod
	// MetricsPort defaults to metrics.DefaultPort.
	MetricsPort int
}

// Get runs `curl -sS --fail --unix-socket SOCKET http://glia-agent/PATH` in the
// node's agent pod.
func (a ExecAgents) Get(ctx context.Context, node, path string, out any) error {
	pl, err := a.Client.CoreV1().Pods(a.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: a.Selector, FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil {
		return fmt.Errorf("find the glia-agent pod on %s: %w", node, err)
	}
	pod := ""
	for _, p := range pl.Items {
		if p.Status.Phase == corev1.PodRunning {
			pod = p.Name
		}
	}
	if pod == "" {
		return fmt.Errorf("no running glia-agent pod (%s in %s) on %s", a.Selector, a.Namespace, node)
	}
	cmd := []string{"curl", "-sS", "--fail", "--max-time", "10", "--unix-socket", a.Socket, "http://glia-agent" + path}
	stdout, stderr, err := a.Exec.ExecPod(ctx, a.Namespace, pod, cmd)
	if err != nil {
		return fmt.Errorf("glia-agent on %s: %s in pod %s/%s: %w: %s", node, shellJoin(cmd), a.Namespace, pod, err, strings.TrimSpace(stderr))
	}
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		return fmt.Errorf("glia-agent on %s: GET %s: decode answer: %w", node, path, err)
	}
	return nil
}

// Metrics runs curl against http://nodeIP:9962/metrics on the node.
func (a ExecAgents) Metrics(ctx context.Context, node, nodeIP string) (string, error) {
	port := a.MetricsPort
	if port == 0 {
		port = metrics.DefaultPort
	}
	cmd := []string{"curl", "-sS", "--fail", "--max-time", "10", "http://" + net.JoinHostPort(nodeIP, strconv.Itoa(port)) + "/metrics"}
	stdout, stderr, err := a.Exec.ExecNode(ctx, node, cmd)
	if err != nil {
		return "", fmt.Errorf("metrics of glia-agent on %s: %s: %w: %s", node, shellJoin(cmd), err, strings.TrimSpace(stderr))
	}
	return stdout, nil
}

// nodeStatus fetches the agent's status.
func nodeStatus(ctx context.Context, a Agents, node string) (*api.Status, error) {
	var s api.Status
	if err := a.Get(ctx, node, api.PathStatus, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// nodeHealth fetches the agent's last health report.
func nodeHealth(ctx context.Context, a Agents, node string) (*health.Report, error) {
	var r health.Report
	if err := a.Get(ctx, node, api.PathHealth, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// errNoMetric is a metric absent from an exposition.
var errNoMetric = errors.New("metric absent")

// parseCounterByLabel reads every sample of the metric name from Prometheus
// exposition text, keyed by the value of label. It wraps errNoMetric when
// the exposition has no sample of the metric.
func parseCounterByLabel(text, name, label string) (map[string]float64, error) {
	out := map[string]float64{}
	found := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels := ""
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndex(rest, "}")
			if end < 0 {
				return nil, fmt.Errorf("malformed sample %q", line)
			}
			labels, rest = rest[1:end], rest[end+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("malformed sample %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("malformed sample %q: %w", line, err)
		}
		found = true
		out[labelValue(labels, label)] += v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("%w: %s", errNoMetric, name)
	}
	return out, nil
}

// labelValue returns the value of key in a Prometheus label set
// (`a="x",b="y"`), unescaped.
func labelValue(labels, key string) string {
	for labels != "" {
		eq := strings.IndexByte(labels, '=')
		if eq < 0 {
			return ""
		}
		k := strings.TrimSpace(labels[:eq])
		rest := strings.TrimLeft(labels[eq+1:], " ")
		if !strings.HasPrefix(rest, `"`) {
			return ""
		}
		var v strings.Builder
		i := 1
		for ; i < len(rest); i++ {
			c := rest[i]
			if c == '\\' && i+1 < len(rest) {
				i++
				switch rest[i] {
				case 'n':
					v.WriteByte('\n')
				default:
					v.WriteByte(rest[i])
				}
				continue
			}
			if c == '"' {
				break
			}
			v.WriteByte(c)
		}
		if k == key {
			return v.String()
		}
		labels = strings.TrimLeft(rest[min(i+1, len(rest)):], " ,")
	}
	return ""
}
