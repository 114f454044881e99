package state

import (
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"

	"glia.dev/glia/internal/config"
)

// Decision is the node's resolved config and the datapath config.Decide
// made of it and of the kernel's one probe: one row, written when the
// agent starts (every key takes effect at a restart), read by status and
// metrics. It is not reconciled: the datapath was built from it.
type Decision struct {
	Node   string
	Config config.Resolved
	Modes  config.Modes
	Kernel config.KernelProbe
}

// TableHeader implements statedb.TableWritable.
func (*Decision) TableHeader() []string {
	return []string{"Node", "Datapath", "HostRouting", "Masquerading", "KubeProxyReplacement", "Kernel"}
}

// TableRow implements statedb.TableWritable.
func (d *Decision) TableRow() []string {
	kpr := "false"
	if d.Modes.KubeProxyReplacement {
		kpr = "true"
	}
	return []string{d.Node, d.Modes.Datapath, d.Modes.HostRouting.Mode, d.Modes.Masquerading, kpr, d.Kernel.KernelVersion}
}

// DecisionByNode is the primary index.
var DecisionByNode = statedb.Index[*Decision, string]{
	Name:       "node",
	FromObject: func(d *Decision) index.KeySet { return index.NewKeySet(index.String(d.Node)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}
