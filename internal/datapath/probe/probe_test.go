package probe

import (
	"os"
	"testing"
)

func TestPrivilegedKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and creates a link")
	}
	k, err := Kernel()
	if err != nil {
		t.Fatal(err)
	}
	// This project targets 6.6+ kernels, where all of these exist.
	if !k.TCX || !k.BPFRedirectPeer || !k.BPFRedirectNeigh || !k.FIBLookup || !k.VXLAN || k.KernelVersion == "" {
		t.Errorf("probe %+v: expected everything on this kernel", k)
	}
}
