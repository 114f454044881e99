package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"
)

// valuesSinceFirstRelease are the chart values added after the first
// release with the chart. `helm upgrade --reuse-values` keeps the values a
// release was installed with and does not add the new chart's defaults, so
// a value added later must be optional in the schema and defaulted in the
// templates, or the upgrade fails. Add each new value here.
var valuesSinceFirstRelease = []struct {
	name string
	flag string // the agent flag it renders when absent
}{
	{"logFormat", "--log-format=text"},
}

// TestUpgradeReusingValues renders the chart with each later value missing
// from the values, as an upgrade that reuses an earlier release's values
// renders it.
func TestUpgradeReusingValues(t *testing.T) {
	for _, v := range valuesSinceFirstRelease {
		t.Run(v.name, func(t *testing.T) {
			chart := filepath.Join(t.TempDir(), "glia")
			if err := os.CopyFS(chart, os.DirFS(chartPath)); err != nil {
				t.Fatal(err)
			}
			valuesFile := filepath.Join(chart, "values.yaml")
			b, err := os.ReadFile(valuesFile)
			if err != nil {
				t.Fatal(err)
			}
			var values map[string]any
			if err := yaml.Unmarshal(b, &values); err != nil {
				t.Fatal(err)
			}
			if _, ok := values[v.name]; !ok {
				t.Fatalf("values.yaml has no %s", v.name)
			}
			delete(values, v.name)
			if b, err = yaml.Marshal(values); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(valuesFile, b, 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := renderChart(t, chart)
			if err != nil {
				t.Fatalf("chart without value %s (an upgrade reusing an earlier release's values): %v", v.name, err)
			}
			if args := m.agent(t).Args; !slices.Contains(args, v.flag) {
				t.Errorf("agent args %v lack %s", args, v.flag)
			}
		})
	}
}
