package config

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func unstructuredFromYAML(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		t.Fatalf("parse yaml: %v", err)
	}
	return &unstructured.Unstructured{Object: obj}
}

// The story's CiliumNodeConfig, as a GliaNodeConfig.
const storyNodeConfig = `
apiVersion: glia.dev/v1alpha1
kind: GliaNodeConfig
metadata:
  namespace: glia-system
  name: glia-switch-from-iptables-ebpf
spec:
  nodeSelector:
    matchLabels:
      io.glia.enable-ebpf: "true"
    matchExpressions:
    - key: node-role.kubernetes.io/control-plane
      operator: DoesNotExist
  defaults:
    enable-bpf-masquerade: "true"
`

func TestNodeConfigFromUnstructured(t *testing.T) {
	got, err := NodeConfigFromUnstructured(unstructuredFromYAML(t, storyNodeConfig))
	if err != nil {
		t.Fatal(err)
	}
	want := NodeConfig{
		Namespace: "glia-system",
		Name:      "glia-switch-from-iptables-ebpf",
		Selector: metav1.LabelSelector{
			MatchLabels: map[string]string{"io.glia.enable-ebpf": "true"},
			MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "node-role.kubernetes.io/control-plane", Operator: metav1.LabelSelectorOpDoesNotExist},
			},
		},
		Defaults: map[string]string{"enable-bpf-masquerade": "true"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// And it does what the story needs: only the labelled worker switches.
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{"io.glia.enable-ebpf": "true"}, "true"},
		{map[string]string{"io.glia.enable-ebpf": "true", "node-role.kubernetes.io/control-plane": ""}, "false"},
		{map[string]string{}, "false"},
	} {
		c := mustResolve(t, Inputs{NodeConfigs: []NodeConfig{got}, NodeLabels: tc.labels})
		if v := c.String(KeyBPFMasquerade); v != tc.want {
			t.Errorf("labels %v: enable-bpf-masquerade = %s, want %s", tc.labels, v, tc.want)
		}
	}
}

func TestNodeConfigFromUnstructuredErrors(t *testing.T) {
	const head = "apiVersion: glia.dev/v1alpha1\nkind: GliaNodeConfig\nmetadata:\n  namespace: ns\n  name: x\n"
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"wrong kind", "apiVersion: cilium.io/v2alpha1\nkind: CiliumNodeConfig\nmetadata:\n  name: x\nspec: {}\n",
			`GliaNodeConfig x: apiVersion "cilium.io/v2alpha1" kind "CiliumNodeConfig": want apiVersion "glia.dev/v1alpha1" kind "GliaNodeConfig"`},
		{"no spec", head, "GliaNodeConfig ns/x: spec is missing"},
		{"unquoted boolean", head + "spec:\n  nodeSelector: {}\n  defaults:\n    enable-bpf-masquerade: true\n",
			`GliaNodeConfig ns/x: spec.defaults["enable-bpf-masquerade"]: got boolean true, want a string (quote it in YAML: "true")`},
		{"unknown spec field", head + "spec:\n  nodeSelectors: {}\n",
			`GliaNodeConfig ns/x: spec: unknown field(s) ["nodeSelectors"]: allowed are ["nodeSelector" "defaults"]`},
		{"number label", head + "spec:\n  nodeSelector:\n    matchLabels:\n      rack: 7\n",
			`spec.nodeSelector.matchLabels["rack"]: got number 7, want a string`},
		{"bad operator", head + "spec:\n  nodeSelector:\n    matchExpressions:\n    - key: a\n      operator: Near\n",
			`GliaNodeConfig ns/x: invalid spec.nodeSelector: "Near" is not a valid label selector operator`},
		{"values not a list", head + "spec:\n  nodeSelector:\n    matchExpressions:\n    - key: a\n      operator: In\n      values: b\n",
			`spec.nodeSelector.matchExpressions[0].values: got string "b", want a list of strings`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NodeConfigFromUnstructured(unstructuredFromYAML(t, tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want it to contain %s", err, tt.want)
			}
		})
	}
}

func TestCRDManifest(t *testing.T) {
	data, err := os.ReadFile("../../deploy/chart/glia/crds/glia.dev_glianodeconfigs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatalf("parse CRD: %v", err)
	}
	get := func(path ...any) any {
		var cur any = crd
		for _, p := range path {
			switch k := p.(type) {
			case string:
				m, ok := cur.(map[string]any)
				if !ok {
					t.Fatalf("%v: not an object at %q", path, k)
				}
				cur = m[k]
			case int:
				l, ok := cur.([]any)
				if !ok || k >= len(l) {
					t.Fatalf("%v: no item %d", path, k)
				}
				cur = l[k]
			}
		}
		return cur
	}
	schema := []any{"spec", "versions", 0, "schema", "openAPIV3Schema"}
	at := func(rest ...any) any { return get(append(append([]any{}, schema...), rest...)...) }
	checks := []struct {
		got  any
		want any
	}{
		{get("apiVersion"), "apiextensions.k8s.io/v1"},
		{get("kind"), "CustomResourceDefinition"},
		{get("metadata", "name"), NodeConfigGVR.Resource + "." + NodeConfigGVR.Group},
		{get("spec", "group"), NodeConfigGVR.Group},
		{get("spec", "scope"), "Namespaced"},
		{get("spec", "names", "kind"), NodeConfigKind},
		{get("spec", "names", "plural"), NodeConfigGVR.Resource},
		{get("spec", "names", "singular"), "glianodeconfig"},
		{get("spec", "names", "shortNames"), []any{"gnc"}},
		{get("spec", "versions", 0, "name"), NodeConfigGVR.Version},
		{get("spec", "versions", 0, "served"), true},
		{get("spec", "versions", 0, "storage"), true},
		{get("spec", "versions", 0, "additionalPrinterColumns", 0, "name"), "Age"},
		{at("required"), []any{"spec"}},
		{at("properties", "spec", "properties", "defaults", "additionalProperties", "type"), "string"},
		{at("properties", "spec", "properties", "nodeSelector", "properties", "matchLabels", "additionalProperties", "type"), "string"},
		{at("properties", "spec", "properties", "nodeSelector", "properties", "matchExpressions", "items", "properties", "operator", "enum"),
			[]any{"In", "NotIn", "Exists", "DoesNotExist"}},
		{at("properties", "spec", "properties", "nodeSelector", "properties", "matchExpressions", "items", "properties", "values", "items", "type"), "string"},
	}
	for i, c := range checks {
		if diff := cmp.Diff(c.want, c.got); diff != "" {
			t.Errorf("check %d (-want +got):\n%s", i, diff)
		}
	}
}
