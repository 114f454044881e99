// Package probe asks the kernel, once at agent start, what the datapaths
// need it to have; config.Decide decides from the answer and the
// datapaths are given it (they never probe again).
package probe

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/config"
)

// Kernel asks this kernel, once, which helpers, attach types and link
// types the datapaths need it has. A probe that fails counts as missing:
// the datapath must not assume what it could not confirm. It changes
// nothing (the throwaway VXLAN link it creates is deleted at once).
func Kernel() (config.KernelProbe, error) {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	k := config.KernelProbe{KernelVersion: unix.ByteSliceToString(uts.Release[:]), VXLAN: vxlanSupported()}
	helper := func(fn asm.BuiltinFunc) (bool, error) {
		err := features.HaveProgramHelper(ebpf.SchedCLS, fn)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, ebpf.ErrNotSupported):
			return false, nil
		}
		return false, fmt.Errorf("probe helper %s: %w", fn, err)
	}
	var errs []error
	var err error
	if k.BPFRedirectPeer, err = helper(asm.FnRedirectPeer); err != nil {
		errs = append(errs, err)
	}
	if k.BPFRedirectNeigh, err = helper(asm.FnRedirectNeigh); err != nil {
		errs = append(errs, err)
	}
	if k.FIBLookup, err = helper(asm.FnFibLookup); err != nil {
		errs = append(errs, err)
	}
	if k.TCX, err = probeTCX(); err != nil {
		errs = append(errs, err)
	}
	return k, errors.Join(errs...)
}

// probeTCX attaches a trivial program to an interface index that does not
// exist: a kernel with tcx says "no such device", one without says the
// attach type is invalid.
func probeTCX() (bool, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return false, fmt.Errorf("probe tcx: load program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: 0x7ffffff0, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err == nil {
		l.Close()
		return true, nil
	}
	switch {
	case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return true, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, ebpf.ErrNotSupported):
		return false, nil
	}
	return false, fmt.Errorf("probe tcx: %w", err)
}

// vxlanSupported creates and deletes a throwaway flow-based vxlan link.
func vxlanSupported() bool {
	l := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "glia_probe_vx"}, VxlanId: 1, Port: 8473, FlowBased: true}
	if err := netlink.LinkAdd(l); err != nil {
		return errors.Is(err, unix.EEXIST)
	}
	netlink.LinkDel(l)
	return true
}
