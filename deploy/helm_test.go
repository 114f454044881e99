package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// The chart's tests run the real Helm (bin/helm, built by `make build`).
// GLIA_BIN names the bin dir; `make test` sets it.

const (
	testRelease   = "glia"
	testNamespace = "glia-system"
	chartPath     = "chart/glia"
	storyValues   = "../examples/story/values.yaml"
)

func helmBin(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("GLIA_BIN")
	if dir == "" {
		t.Fatal("GLIA_BIN is not set: the chart's tests run the real helm; run `make build` and set GLIA_BIN to its bin dir " +
			"(GLIA_BIN=$PWD/bin go test ./deploy/), as `make test` does")
	}
	p := filepath.Join(dir, "helm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no helm in GLIA_BIN=%s (%v): run `make build`, which builds bin/helm", dir, err)
	}
	return p
}

// runHelm runs helm with args and returns its stdout; err carries stderr.
func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Helm writes its cache and config under HOME: keep them in the test.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "HELM_CACHE_HOME="+home+"/cache",
		"HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// manifests are the objects `helm template` rendered, decoded strictly: a
// field the Kubernetes types do not have (a typo) fails the decoding.
type manifests struct {
	ConfigMaps          map[string]*corev1.ConfigMap
	DaemonSets          map[string]*appsv1.DaemonSet
	ServiceAccounts     map[string]*corev1.ServiceAccount
	ClusterRoles        map[string]*rbacv1.ClusterRole
	ClusterRoleBindings map[string]*rbacv1.ClusterRoleBinding
	Roles               map[string]*rbacv1.Role
	RoleBindings        map[string]*rbacv1.RoleBinding
	Kinds               []string
}

func renderChart(t *testing.T, chart string, args ...string) (*manifests, error) {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", testRelease, chart, "--namespace", testNamespace}, args...)...)
	if err != nil {
		return nil, err
	}
	m, err := parseManifests(out)
	if err != nil {
		t.Fatalf("rendered manifests do not decode: %v\n%s", err, out)
	}
	return m, nil
}

// render renders the chart with args; a failure fails the test.
func render(t *testing.T, args ...string) *manifests {
	t.Helper()
	m, err := renderChart(t, chartPath, args...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func parseManifests(out string) (*manifests, error) {
	m := &manifests{
		ConfigMaps: map[string]*corev1.ConfigMap{}, DaemonSets: map[string]*appsv1.DaemonSet{},
		ServiceAccounts: map[string]*corev1.ServiceAccount{}, ClusterRoles: map[string]*rbacv1.ClusterRole{},
		ClusterRoleBindings: map[string]*rbacv1.ClusterRoleBinding{}, Roles: map[string]*rbacv1.Role{},
		RoleBindings: map[string]*rbacv1.RoleBinding{},
	}
	for _, doc := range strings.Split(out, "\n---") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return nil, err
		}
		m.Kinds = append(m.Kinds, meta.Kind)
		var err error
		switch meta.Kind {
		case "ConfigMap":
			err = decodeInto(doc, m.ConfigMaps, func(o *corev1.ConfigMap) string { return o.Name })
		case "DaemonSet":
			err = decodeInto(doc, m.DaemonSets, func(o *appsv1.DaemonSet) string { return o.Name })
		case "ServiceAccount":
			err = decodeInto(doc, m.ServiceAccounts, func(o *corev1.ServiceAccount) string { return o.Name })
		case "ClusterRole":
			err = decodeInto(doc, m.ClusterRoles, func(o *rbacv1.ClusterRole) string { return o.Name })
		case "ClusterRoleBinding":
			err = decodeInto(doc, m.ClusterRoleBindings, func(o *rbacv1.ClusterRoleBinding) string { return o.Name })
		case "Role":
			err = decodeInto(doc, m.Roles, func(o *rbacv1.Role) string { return o.Name })
		case "RoleBinding":
			err = decodeInto(doc, m.RoleBindings, func(o *rbacv1.RoleBinding) string { return o.Name })
		default:
			err = fmt.Errorf("unexpected kind %q rendered", meta.Kind)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", meta.Kind, err)
		}
	}
	return m, nil
}

func decodeInto[T any](doc string, into map[string]*T, name func(*T) string) error {
	o := new(T)
	if err := yaml.UnmarshalStrict([]byte(doc), o); err != nil {
		return err
	}
	n := name(o)
	if _, dup := into[n]; dup {
		return fmt.Errorf("%q rendered twice", n)
	}
	into[n] = o
	return nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func (m *manifests) config(t *testing.T) map[string]string {
	t.Helper()
	cm, ok := m.ConfigMaps["glia-config"]
	if !ok {
		t.Fatal("no ConfigMap glia-config rendered")
	}
	if cm.Namespace != testNamespace {
		t.Fatalf("ConfigMap glia-config in namespace %q, want %q", cm.Namespace, testNamespace)
	}
	return cm.Data
}

func (m *manifests) daemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	ds, ok := m.DaemonSets["glia"]
	if !ok {
		t.Fatal("no DaemonSet glia rendered")
	}
	return ds
}

func (m *manifests) agent(t *testing.T) *corev1.Container {
	t.Helper()
	ds := m.daemonSet(t)
	for i := range ds.Spec.Template.Spec.Containers {
		if c := &ds.Spec.Template.Spec.Containers[i]; c.Name == "glia-agent" {
			return c
		}
	}
	t.Fatal("DaemonSet glia has no container glia-agent")
	return nil
}
