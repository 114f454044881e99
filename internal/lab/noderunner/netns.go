package noderunner

import (
	"path/filepath"
	"strings"

	"glia.dev/glia/internal/netnsfile"
)

// NetNSPrefix starts the name of every pod network namespace the runner
// creates under NetNSDir, so `ip netns` shows them and the lab's cleanup
// finds them all.
const NetNSPrefix = "glia-pod-"

// NetNSDir is where named network namespaces live (as with `ip netns`).
const NetNSDir = netnsfile.Dir

// PodNetNSName is the deterministic namespace name of a pod on a node:
// glia-pod-<node>-<first 8 characters of the pod UID>.
func PodNetNSName(node, uid string) string {
	short := strings.ReplaceAll(uid, "-", "")
	if len(short) > 8 {
		short = short[:8]
	}
	return NetNSPrefix + node + "-" + short
}

// createNetNS creates a network namespace bind-mounted at dir/name, as
// `ip netns add` does. An existing namespace at that path is reused.
func createNetNS(dir, name string) (string, error) {
	path := filepath.Join(dir, name)
	if netnsfile.IsNamespace(path) {
		return path, nil
	}
	if err := netnsfile.ShareDir(dir); err != nil {
		return "", err
	}
	if err := netnsfile.Create(path); err != nil {
		return "", err
	}
	return path, nil
}

// removeNetNS unmounts and removes a namespace made by createNetNS. A
// missing namespace is not an error.
func removeNetNS(path string) error {
	if path == "" {
		return nil
	}
	return netnsfile.Remove(path)
}
