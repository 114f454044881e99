package bpf

import (
	"context"
	"errors"
	"iter"
	"os"

	"github.com/cilium/statedb"
	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/state"
)

// programOps reconciles the programs on node devices: Init attaches them
// in the order traffic needs; a refresh finds one detached (someone
// removed the link, the device was recreated) and attaches it again.
type programOps struct{ d *Datapath }

func (o programOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, p *state.Program) error {
	d := o.d
	return d.locked(func() error {
		changed, err := d.attachProgram(p)
		if changed && datapath.Refreshing(p.Status) {
			d.opts.Drifted(datapath.ReconcilerPrograms, p.Name(), "was not attached")
		}
		return err
	})
}

func (o programOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, p *state.Program) error {
	d := o.d
	d.mu.Lock()
	defer d.mu.Unlock()
	a := attachment{prog: p.Program, ifname: p.Interface, egress: p.Egress}
	if l, err := netlinksafe.LinkByName(p.Interface); err == nil {
		a.ifindex = l.Attrs().Index
	}
	return d.detach(a)
}

// Prune detaches device programs (not pods': those are the endpoints')
// pinned for a hook the table no longer holds.
func (o programOps) Prune(_ context.Context, _ statedb.ReadTxn, progs iter.Seq2[*state.Program, statedb.Revision]) error {
	d := o.d
	d.mu.Lock()
	defer d.mu.Unlock()
	want := map[string]bool{}
	for p := range progs {
		want[attachment{prog: p.Program, ifname: p.Interface, egress: p.Egress}.pinName()] = true
	}
	ents, err := os.ReadDir(d.linksDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var errs []error
	for _, e := range ents {
		a, ok := parsePinName(e.Name())
		if !ok || a.prog == "from_container" || want[e.Name()] {
			continue
		}
		if l, err := netlinksafe.LinkByName(a.ifname); err == nil {
			a.ifindex = l.Attrs().Index
		}
		d.log.Info("detaching a device program no longer wanted", "link", e.Name())
		errs = append(errs, d.detach(a))
	}
	return errors.Join(errs...)
}
