package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// KernelFeatures are the kernel capabilities BPF host routing and the
// attachment method depend on.
type KernelFeatures struct {
	TCX           bool // tcx attach points (6.6+); else tc clsact is used
	RedirectPeer  bool // bpf_redirect_peer
	RedirectNeigh bool // bpf_redirect_neigh
	FIBLookup     bool // bpf_fib_lookup
}

// ProbeKernel asks the kernel what it supports. It changes nothing.
func ProbeKernel() (KernelFeatures, error) {
	var f KernelFeatures
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
	var err error
	if f.RedirectPeer, err = helper(asm.FnRedirectPeer); err != nil {
		return f, err
	}
	if f.RedirectNeigh, err = helper(asm.FnRedirectNeigh); err != nil {
		return f, err
	}
	if f.FIBLookup, err = helper(asm.FnFibLookup); err != nil {
		return f, err
	}
	if f.TCX, err = probeTCX(); err != nil {
		return f, err
	}
	return f, nil
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
