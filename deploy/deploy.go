// Package deploy holds glia's Helm chart (chart/glia), embedded so the lab
// and `glia config preview` use exactly these files: the CRDs in the chart's
// crds/ directory, and the whole chart for `helm install`. It also maps glia
// config keys to the chart's values (ValueForKey, SetArgs).
package deploy

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
)

// ChartDir is the chart's directory in Chart (and in the repository, under
// deploy/).
const ChartDir = "chart/glia"

// Chart holds the chart's files, under ChartDir.
//
//go:embed all:chart/glia
var Chart embed.FS

// CRDManifests returns every CRD manifest of the chart (its crds/*.yaml).
func CRDManifests() ([][]byte, error) {
	dir := path.Join(ChartDir, "crds")
	ents, err := Chart.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, e := range ents {
		if e.IsDir() || path.Ext(e.Name()) != ".yaml" {
			continue
		}
		b, err := Chart.ReadFile(path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no CRD manifests in %s", dir)
	}
	return out, nil
}

// WriteChart writes the chart into dir, for `helm install|template|lint
// DIR`. dir must be missing or empty: helm renders every file of a chart
// directory, so a leftover file of another chart version would be rendered
// too.
func WriteChart(dir string) error {
	if dir == "" {
		return errors.New("write chart: no directory given")
	}
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write chart: %w", err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("write chart: %s is not empty: remove it first (helm would render its leftover files)", dir)
	}
	return fs.WalkDir(Chart, ChartDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(ChartDir, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := Chart.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return fmt.Errorf("write chart: %w", err)
		}
		return nil
	})
}
