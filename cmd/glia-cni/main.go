// Command glia-cni is the glia CNI plugin; see package internal/cni.
package main

import (
	"log"
	"os"
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"

	"glia.dev/glia/internal/cni"
)

// Namespace switches apply to OS threads: keep main on one.
func init() { runtime.LockOSThread() }

func main() {
	// Bound what skel reads from stdin before it reads it all.
	if e := cni.LimitStdin(); e != nil {
		if err := e.Print(); err != nil {
			log.Print("write error JSON to stdout: ", err)
		}
		os.Exit(1)
	}
	skel.PluginMainFuncs(cni.Funcs(), cni.Versions(), cni.About)
}
