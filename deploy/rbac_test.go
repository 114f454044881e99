package deploy

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
)

// The agent's API calls (internal/k8s, and the agent's readiness taint and
// uninstall check of INSTALL-CONTRACT.md) and nothing more. A change here is
// a change of what the agent may do: update the comments in the chart's
// clusterrole.yaml and role.yaml with it.
var (
	wantClusterRules = []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"patch"}},
		{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
		{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"list", "watch"}},
	}
	wantNamespaceRules = []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"glia-config"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"glia.dev"}, Resources: []string{"glianodeconfigs"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, ResourceNames: []string{"glia"}, Verbs: []string{"get"}},
	}
)

func TestRBAC(t *testing.T) {
	m := render(t)
	if _, ok := m.ServiceAccounts["glia"]; !ok || m.ServiceAccounts["glia"].Namespace != testNamespace {
		t.Fatalf("no ServiceAccount glia in %s", testNamespace)
	}
	if got := m.daemonSet(t).Spec.Template.Spec.ServiceAccountName; got != "glia" {
		t.Fatalf("DaemonSet runs as ServiceAccount %q, want glia", got)
	}
	if len(m.ClusterRoles) != 1 || len(m.Roles) != 1 || len(m.ClusterRoleBindings) != 1 || len(m.RoleBindings) != 1 {
		t.Fatalf("rendered %d ClusterRoles, %d Roles, %d ClusterRoleBindings, %d RoleBindings; want one of each",
			len(m.ClusterRoles), len(m.Roles), len(m.ClusterRoleBindings), len(m.RoleBindings))
	}
	cr, ok := m.ClusterRoles["glia"]
	if !ok {
		t.Fatal("no ClusterRole glia")
	}
	if diff := cmp.Diff(wantClusterRules, cr.Rules); diff != "" {
		t.Errorf("ClusterRole glia rules (-want +got):\n%s", diff)
	}
	role, ok := m.Roles["glia"]
	if !ok || role.Namespace != testNamespace {
		t.Fatalf("no Role glia in %s", testNamespace)
	}
	if diff := cmp.Diff(wantNamespaceRules, role.Rules); diff != "" {
		t.Errorf("Role glia rules (-want +got):\n%s", diff)
	}
	agent := rbacv1.Subject{Kind: "ServiceAccount", Name: "glia", Namespace: testNamespace}
	crb := m.ClusterRoleBindings["glia"]
	if crb == nil || crb.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "glia"}) ||
		!cmp.Equal(crb.Subjects, []rbacv1.Subject{agent}) {
		t.Errorf("ClusterRoleBinding glia does not bind ClusterRole glia to the agent's ServiceAccount alone: %+v", crb)
	}
	rb := m.RoleBindings["glia"]
	if rb == nil || rb.Namespace != testNamespace || rb.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "glia"}) ||
		!cmp.Equal(rb.Subjects, []rbacv1.Subject{agent}) {
		t.Errorf("RoleBinding glia does not bind Role glia to the agent's ServiceAccount alone: %+v", rb)
	}

	// Whatever the rules above become, these stay forbidden.
	all := append(slices.Clone(cr.Rules), role.Rules...)
	for _, tc := range []struct {
		verb, group, resource, name string
	}{
		{"get", "", "secrets", "any"},
		{"list", "", "secrets", ""},
		{"watch", "", "secrets", ""},
		{"create", "", "pods", ""},
		{"update", "", "pods", "any"},
		{"patch", "", "pods", "any"},
		{"delete", "", "pods", "any"},
		{"deletecollection", "", "pods", ""},
		{"create", "", "pods/exec", ""},
		{"create", "", "pods/eviction", ""},
		{"update", "", "pods/status", "any"},
		{"get", "", "configmaps", "kube-root-ca.crt"},
		{"list", "", "configmaps", ""}, // by name only (the config watch's field selector)
		{"watch", "", "configmaps", ""},
		{"update", "", "configmaps", "glia-config"},
		{"delete", "", "nodes", "any"},
		{"update", "apps", "daemonsets", "glia"},
		{"create", "glia.dev", "glianodeconfigs", ""},
		{"create", "", "serviceaccounts/token", "glia"},
		{"get", "", "pods", "any"}, // list and watch only: the informer's
		{"create", "networking.k8s.io", "networkpolicies", ""},
		{"update", "networking.k8s.io", "networkpolicies", "any"},
		{"delete", "networking.k8s.io", "networkpolicies", "any"},
		{"update", "", "namespaces", "any"},
	} {
		if allows(all, tc.verb, tc.group, tc.resource, tc.name) {
			t.Errorf("the agent may %s %s %q (group %q): it must not", tc.verb, tc.resource, tc.name, tc.group)
		}
	}
	for _, r := range all {
		for _, s := range [][]string{r.APIGroups, r.Resources, r.Verbs, r.ResourceNames} {
			if slices.Contains(s, "*") {
				t.Errorf("rule %+v has a wildcard", r)
			}
		}
		if len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %+v grants non-resource URLs", r)
		}
	}
}

// allows evaluates RBAC rules as the API server's authorizer does for a
// resource request (wildcards, resourceNames).
func allows(rules []rbacv1.PolicyRule, verb, group, resource, name string) bool {
	match := func(list []string, v string) bool { return slices.Contains(list, "*") || slices.Contains(list, v) }
	for _, r := range rules {
		if !match(r.Verbs, verb) || !match(r.APIGroups, group) || !match(r.Resources, resource) {
			continue
		}
		if len(r.ResourceNames) == 0 || (name != "" && slices.Contains(r.ResourceNames, name)) {
			return true
		}
	}
	return false
}

// TestAllows checks the evaluator the RBAC test relies on.
func TestAllows(t *testing.T) {
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"a"}, Verbs: []string{"get"}},
		{APIGroups: []string{"*"}, Resources: []string{"pods"}, Verbs: []string{"*"}},
	}
	for _, tc := range []struct {
		verb, group, resource, name string
		want                        bool
	}{
		{"get", "", "configmaps", "a", true},
		{"get", "", "configmaps", "b", false},
		{"list", "", "configmaps", "", false},
		{"get", "", "configmaps", "", false},
		{"delete", "", "pods", "x", true},
		{"create", "apps", "pods", "", true},
		{"get", "", "secrets", "x", false},
	} {
		if got := allows(rules, tc.verb, tc.group, tc.resource, tc.name); got != tc.want {
			t.Errorf("allows(%s %q %s %q) = %v, want %v", tc.verb, tc.group, tc.resource, tc.name, got, tc.want)
		}
	}
}
