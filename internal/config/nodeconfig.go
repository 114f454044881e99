package config

import (
	"errors"
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GliaNodeConfig API coordinates (deploy/chart/glia/crds/glia.dev_glianodeconfigs.yaml).
const (
	NodeConfigGroup   = "glia.dev"
	NodeConfigVersion = "v1alpha1"
	NodeConfigKind    = "GliaNodeConfig"
)

// NodeConfigGVR is the resource the agent lists and watches with the
// dynamic client, in its own namespace.
var NodeConfigGVR = schema.GroupVersionResource{Group: NodeConfigGroup, Version: NodeConfigVersion, Resource: "glianodeconfigs"}

// NodeConfigFromUnstructured converts a GliaNodeConfig object strictly:
// unknown fields and values of the wrong type are errors naming the field.
func NodeConfigFromUnstructured(u *unstructured.Unstructured) (NodeConfig, error) {
	name := u.GetName()
	if ns := u.GetNamespace(); ns != "" {
		name = ns + "/" + name
	}
	fail := func(err error) (NodeConfig, error) {
		return NodeConfig{}, fmt.Errorf("GliaNodeConfig %s: %w", name, err)
	}
	if gvk := u.GroupVersionKind(); gvk.Group != NodeConfigGroup || gvk.Version != NodeConfigVersion || gvk.Kind != NodeConfigKind {
		return fail(fmt.Errorf("apiVersion %q kind %q: want apiVersion %q kind %q",
			u.GetAPIVersion(), u.GetKind(), NodeConfigGroup+"/"+NodeConfigVersion, NodeConfigKind))
	}
	if u.GetName() == "" {
		return fail(errors.New("metadata.name is empty"))
	}
	nc := NodeConfig{Namespace: u.GetNamespace(), Name: u.GetName()}

	specRaw, ok := u.Object["spec"]
	if !ok {
		return fail(errors.New("spec is missing"))
	}
	spec, ok := specRaw.(map[string]any)
	if !ok {
		return fail(fmt.Errorf("spec: got %s, want an object", describe(specRaw)))
	}
	if err := onlyFields("spec", spec, "nodeSelector", "defaults"); err != nil {
		return fail(err)
	}

	if selRaw, ok := spec["nodeSelector"]; ok && selRaw != nil {
		sel, err := selectorFrom(selRaw)
		if err != nil {
			return fail(err)
		}
		nc.Selector = sel
		if _, err := metav1.LabelSelectorAsSelector(&nc.Selector); err != nil {
			return fail(fmt.Errorf("invalid spec.nodeSelector: %w", err))
		}
	}

	if defRaw, ok := spec["defaults"]; ok && defRaw != nil {
		m, err := stringMap("spec.defaults", defRaw)
		if err != nil {
			return fail(err)
		}
		nc.Defaults = m
	}
	return nc, nil
}

func selectorFrom(raw any) (metav1.LabelSelector, error) {
	var sel metav1.LabelSelector
	obj, ok := raw.(map[string]any)
	if !ok {
		return sel, fmt.Errorf("spec.nodeSelector: got %s, want an object", describe(raw))
	}
	if err := onlyFields("spec.nodeSelector", obj, "matchLabels", "matchExpressions"); err != nil {
		return sel, err
	}
	if ml, ok := obj["matchLabels"]; ok && ml != nil {
		m, err := stringMap("spec.nodeSelector.matchLabels", ml)
		if err != nil {
			return sel, err
		}
		sel.MatchLabels = m
	}
	if me, ok := obj["matchExpressions"]; ok && me != nil {
		list, ok := me.([]any)
		if !ok {
			return sel, fmt.Errorf("spec.nodeSelector.matchExpressions: got %s, want a list", describe(me))
		}
		for i, item := range list {
			path := fmt.Sprintf("spec.nodeSelector.matchExpressions[%d]", i)
			e, ok := item.(map[string]any)
			if !ok {
				return sel, fmt.Errorf("%s: got %s, want an object", path, describe(item))
			}
			if err := onlyFields(path, e, "key", "operator", "values"); err != nil {
				return sel, err
			}
			key, err := stringField(path+".key", e["key"])
			if err != nil {
				return sel, err
			}
			op, err := stringField(path+".operator", e["operator"])
			if err != nil {
				return sel, err
			}
			req := metav1.LabelSelectorRequirement{Key: key, Operator: metav1.LabelSelectorOperator(op)}
			if v, ok := e["values"]; ok && v != nil {
				vl, ok := v.([]any)
				if !ok {
					return sel, fmt.Errorf("%s.values: got %s, want a list of strings", path, describe(v))
				}
				for j, s := range vl {
					str, err := stringField(fmt.Sprintf("%s.values[%d]", path, j), s)
					if err != nil {
						return sel, err
					}
					req.Values = append(req.Values, str)
				}
			}
			sel.MatchExpressions = append(sel.MatchExpressions, req)
		}
	}
	return sel, nil
}

func onlyFields(path string, obj map[string]any, allowed ...string) error {
	var unknown []string
	for k := range obj {
		found := false
		for _, a := range allowed {
			if k == a {
				found = true
				break
			}
		}
		if !found {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return fmt.Errorf("%s: unknown field(s) %q: allowed are %q", path, unknown, allowed)
}

func stringField(path string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: got %s, want a string", path, describe(v))
	}
	return s, nil
}

func stringMap(path string, raw any) (map[string]string, error) {
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: got %s, want an object of strings", path, describe(raw))
	}
	out := make(map[string]string, len(obj))
	var errs []error
	for _, k := range sortedKeys(obj) {
		s, ok := obj[k].(string)
		if !ok {
			errs = append(errs, fmt.Errorf("%s[%q]: got %s, want a string (quote it in YAML: %q)",
				path, k, describe(obj[k]), fmt.Sprint(obj[k])))
			continue
		}
		out[k] = s
	}
	return out, errors.Join(errs...)
}

func describe(v any) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case bool:
		return fmt.Sprintf("boolean %v", t)
	case int64, int, int32, float64, float32:
		return fmt.Sprintf("number %v", t)
	case string:
		return fmt.Sprintf("string %q", t)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
