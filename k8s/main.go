// Command glia-k8s is one multi-call binary holding the upstream Kubernetes
// control plane (kube-apiserver, kube-controller-manager, kube-scheduler) and
// kube-proxy, built from the k8s.io/kubernetes module. The lab runs it as its
// real control plane; the legacy datapath and the benchmarks run its proxy.
//
// The component is chosen by the first argument (glia-k8s apiserver ...) or by
// the name the binary was invoked under (kube-apiserver, ...).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	_ "time/tzdata"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

var components = map[string]func() *cobra.Command{
	"apiserver":          func() *cobra.Command { return apiserver.NewAPIServerCommand() },
	"controller-manager": func() *cobra.Command { return controllermanager.NewControllerManagerCommand() },
	"scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"proxy":              func() *cobra.Command { return proxy.NewProxyCommand() },
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: glia-k8s apiserver|controller-manager|scheduler|proxy [flags]")
	fmt.Fprintln(os.Stderr, "       (or invoke as kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy)")
}

func main() {
	name := strings.TrimPrefix(filepath.Base(os.Args[0]), "kube-")
	args := os.Args[1:]
	if _, ok := components[name]; !ok {
		if len(args) == 0 {
			usage()
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	newCmd, ok := components[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "glia-k8s: unknown component %q\n", name)
		usage()
		os.Exit(2)
	}
	cmd := newCmd()
	cmd.SetArgs(args)
	os.Exit(cli.Run(cmd))
}
