// Command glia-cni is the glia CNI plugin; see package internal/cni. A
// container runtime runs it with CNI_COMMAND set; run by hand, it answers
// --help and --version (exit 0) and refuses anything else (exit 2).
package main

import (
	"fmt"
	"log"
	"os"
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"

	"glia.dev/glia/internal/cni"
	"glia.dev/glia/internal/version"
)

// Namespace switches apply to OS threads: keep main on one.
func init() { runtime.LockOSThread() }

func main() {
	if os.Getenv("CNI_COMMAND") == "" && len(os.Args) > 1 {
		os.Exit(byHand(os.Args[1:]))
	}
	// Bound what skel reads from stdin before it reads it all.
	if e := cni.LimitStdin(); e != nil {
		if err := e.Print(); err != nil {
			log.Print("write error JSON to stdout: ", err)
		}
		os.Exit(1)
	}
	skel.PluginMainFuncs(cni.Funcs(), cni.Versions(), cni.About)
}

// byHand answers a person running the plugin.
func byHand(args []string) int {
	switch args[0] {
	case "--version", "version":
		fmt.Println("glia-cni", version.Get())
		return 0
	case "-h", "--help", "help":
		fmt.Printf("%s\n\nglia-cni is run by the container runtime with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC, VERSION)\n"+
			"and the network config on stdin, as the CNI specification says; by hand it takes --help or --version.\n", cni.About)
		return 0
	}
	fmt.Fprintf(os.Stderr, "glia-cni: unknown argument %q: the container runtime runs glia-cni with CNI_COMMAND set; by hand use --help or --version\n", args[0])
	return 2
}
