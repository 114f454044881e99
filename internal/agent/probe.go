package agent

import (
	"errors"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/config"
	bpfdp "glia.dev/glia/internal/datapath/bpf"
)

// probeKernel asks this kernel which helpers and attach types the eBPF
// datapath needs it has. A probe that fails counts as missing: the
// datapath must not assume what it could not confirm.
func probeKernel() (config.KernelProbe, error) {
	var uts unix.Utsname
	unix.Uname(&uts)
	f, err := bpfdp.ProbeKernel()
	return config.KernelProbe{
		TCX:              f.TCX,
		BPFRedirectPeer:  f.RedirectPeer,
		BPFRedirectNeigh: f.RedirectNeigh,
		FIBLookup:        f.FIBLookup,
		VXLAN:            vxlanSupported(),
		KernelVersion:    unix.ByteSliceToString(uts.Release[:]),
	}, err
}

// vxlanSupported creates and deletes a throwaway flow-based vxlan link in
// the agent's own (node) namespace.
func vxlanSupported() bool {
	l := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "glia_probe_vx"}, VxlanId: 1, Port: 8473, FlowBased: true}
	if err := netlink.LinkAdd(l); err != nil {
		return errors.Is(err, unix.EEXIST)
	}
	netlink.LinkDel(l)
	return true
}
