// Package deploy holds glia's Kubernetes manifests; the CRDs are embedded so
// the lab (and `glia install` later) apply exactly these files.
package deploy

import "embed"

// CRDs holds crds/*.yaml.
//
//go:embed crds/*.yaml
var CRDs embed.FS

// CRDManifests returns every CRD manifest.
func CRDManifests() ([][]byte, error) {
	ents, err := CRDs.ReadDir("crds")
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, e := range ents {
		b, err := CRDs.ReadFile("crds/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}
