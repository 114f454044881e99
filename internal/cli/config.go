package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/k8s"
)

// kubeconfigPath: --kubeconfig, else $KUBECONFIG, else the lab's when a lab is up.
func kubeconfigPath(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return env, nil
	}
	l, err := newLab()
	if err != nil {
		return "", err
	}
	p := l.Layout().Kubeconfig()
	if _, err := os.Stat(p); err != nil {
		return "", errors.New("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or bring up the lab (glia lab up)")
	}
	return p, nil
}

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Show a node's effective config and preview changes before making them"}
	cmd.AddCommand(newConfigViewCmd(g), newConfigPreviewCmd(g))
	return cmd
}

// agentConfig asks the node's agent what it resolved its config from.
func agentConfig(ctx context.Context, g *globals) (*config.Report, *config.Config, error) {
	sock, err := g.socketFor()
	if err != nil {
		return nil, nil, err
	}
	var rep config.Report
	if err := api.NewClient(sock).Config(ctx, &rep); err != nil {
		return nil, nil, fmt.Errorf("glia-agent at %s: %w", sock, err)
	}
	cur, _, err := config.Resolve(rep.Inputs)
	if err != nil {
		return nil, nil, fmt.Errorf("the agent's own inputs no longer resolve: %w", err)
	}
	return &rep, cur, nil
}

// Kinds of the objects config prints.
const (
	kindConfigView    = "ConfigView"
	kindConfigPreview = "ConfigPreview"
)

// configView is what `glia config view` prints: every effective key of a
// node with the source that set it.
type configView struct {
	Node string          `json:"node"`
	Keys []configViewKey `json:"keys"`
}

type configViewKey struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Source string `json:"source"`
	// Overrides are the lower-precedence sources that set the key too.
	Overrides []string `json:"overrides,omitempty"`
}

func newConfigView(node string, cur *config.Config) configView {
	v := configView{Node: node, Keys: []configViewKey{}}
	for _, r := range cur.Table() {
		k := configViewKey{Key: r.Key, Value: r.Value, Source: r.Source.String()}
		for _, o := range r.Overridden {
			k.Overrides = append(k.Overrides, o.String())
		}
		v.Keys = append(v.Keys, k)
	}
	return v
}

func renderConfigView(w io.Writer, v configView) error {
	fmt.Fprintf(w, "Effective config of %s (resolved at its agent's start):\n", v.Node)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE\tOVERRIDES")
	for _, k := range v.Keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Key, k.Value, k.Source, strings.Join(k.Overrides, ", "))
	}
	return tw.Flush()
}

func newConfigViewCmd(g *globals) *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "view",
		Short: "Print every effective config key of a node with the source that set it",
		Example: `  glia config view --node lab-node-2
  glia config view --node lab-node-2 -o jsonpath='{.keys[?(@.key=="enable-bpf-masquerade")].value}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, cur, err := agentConfig(cmd.Context(), g)
			if err != nil {
				return err
			}
			v := newConfigView(rep.Node, cur)
			return out.print(cmd.OutOrStdout(), kindConfigView, v, func(w io.Writer) error { return renderConfigView(w, v) })
		},
	}
	cmd.Flags().StringVar(&g.node, "node", "", "lab node to ask (lab-node-N)")
	addOutputFlag(cmd, &out, false)
	return cmd
}

func newConfigPreviewCmd(g *globals) *cobra.Command {
	var kubeconfig string
	var files, labels, sets []string
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "preview",
		Short: "Resolve the config a node would get at its next agent restart, and what would change",
		Long: `preview resolves the config the node's agent would get if it restarted now —
ConfigMap glia-config and every GliaNodeConfig as they are in the cluster,
plus the objects in -f files (not yet applied), the labels given with
--label (not yet set) and ConfigMap keys given with --set — runs the
fallback rules against the node's kernel (as its agent probed it), and
prints what would change, which changes need an agent restart and which
would disrupt traffic. Nothing is changed.`,
		Example: `  glia config preview --node lab-node-2 -f cilium-fix.yaml --label io.glia.enable-ebpf=true
  glia config preview --node lab-node-2 --set enable-bpf-masquerade=true`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			// The command line first: nothing is asked with a wrong one.
			setLabels, err := keyValues("--label", labels)
			if err != nil {
				return err
			}
			setKeys, err := keyValues("--set", sets)
			if err != nil {
				return err
			}
			rep, cur, err := agentConfig(ctx, g)
			if err != nil {
				return err
			}
			kc, err := kubeconfigPath(kubeconfig)
			if err != nil {
				return err
			}
			c, err := k8s.NewClients(kc)
			if err != nil {
				return err
			}
			node, err := c.Kube.CoreV1().Nodes().Get(ctx, rep.Node, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("node %s: %w", rep.Node, err)
			}
			ns := "glia-system"
			in, err := k8s.ConfigInputs(ctx, c, ns, node, rep.Inputs.Flags)
			if err != nil {
				return err
			}
			in.NodeLabels = map[string]string{}
			for k, v := range node.Labels {
				in.NodeLabels[k] = v
			}
			for k, v := range setLabels {
				in.NodeLabels[k] = v
			}
			for _, f := range files {
				if err := addManifest(&in, f); err != nil {
					return err
				}
			}
			if len(sets) > 0 {
				cm := map[string]string{}
				for k, v := range in.ConfigMap {
					cm[k] = v
				}
				for k, v := range setKeys {
					cm[k] = v
				}
				in.ConfigMap = cm
			}
			p, err := config.NewPreview(cur, in, rep.Probe)
			if err != nil {
				return fmt.Errorf("%s would not start with this config:\n%w", rep.Node, err)
			}
			nodes, err := c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			var sets2 []map[string]string
			for _, n := range nodes.Items {
				l := n.Labels
				if n.Name == rep.Node {
					l = in.NodeLabels
				}
				sets2 = append(sets2, l)
			}
			unmatched, _ := config.UnmatchedNodeConfigs(in.NodeConfigs, sets2)
			pv := newConfigPreview(rep.Node, p, unmatched)
			return out.print(cmd.OutOrStdout(), kindConfigPreview, pv, func(w io.Writer) error { return renderPreview(w, pv) })
		},
	}
	cmd.Flags().StringVar(&g.node, "node", "", "lab node to preview (lab-node-N)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG, else the lab's)")
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "GliaNodeConfig or ConfigMap glia-config manifests to preview as if applied (repeatable)")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "node label key=value to preview as if set (repeatable)")
	cmd.Flags().StringArrayVar(&sets, "set", nil, "ConfigMap glia-config key=value to preview as if set (repeatable)")
	addOutputFlag(cmd, &out, false)
	return cmd
}

// keyValues parses repeated key=value flags.
func keyValues(flag string, args []string) (map[string]string, error) {
	m := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usageErrorf("%s %q: use key=value", flag, a)
		}
		m[k] = v
	}
	return m, nil
}

// addManifest adds the GliaNodeConfigs and the glia-config ConfigMap of a
// YAML file to the inputs, replacing same-named ones.
func addManifest(in *config.Inputs, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("%s: %w", path, err)
		}
		switch {
		case len(u.Object) == 0:
		case u.GetKind() == config.NodeConfigKind:
			nc, err := config.NodeConfigFromUnstructured(&u)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			replaced := false
			for i := range in.NodeConfigs {
				if in.NodeConfigs[i].Name == nc.Name {
					in.NodeConfigs[i], replaced = nc, true
				}
			}
			if !replaced {
				in.NodeConfigs = append(in.NodeConfigs, nc)
			}
		case u.GetKind() == "ConfigMap" && u.GetName() == "glia-config":
			data, _, _ := unstructured.NestedStringMap(u.Object, "data")
			in.ConfigMap = data
		default:
			return fmt.Errorf("%s: %s %q is neither a %s nor ConfigMap glia-config", path, u.GetKind(), u.GetName(), config.NodeConfigKind)
		}
	}
}

// configPreview is what `glia config preview` prints.
type configPreview struct {
	Node string `json:"node"`
	// NodeConfigs are the GliaNodeConfigs selecting the node, in
	// precedence order (later wins).
	NodeConfigs []string `json:"nodeConfigs"`
	// UnmatchedNodeConfigs select no node of the cluster.
	UnmatchedNodeConfigs []string       `json:"unmatchedNodeConfigs,omitempty"`
	Warnings             []string       `json:"warnings,omitempty"`
	Modes                previewModes   `json:"modes"`
	ModeChanges          []string       `json:"modeChanges,omitempty"`
	Changes              []configChange `json:"changes"`
	Summary              previewSummary `json:"summary"`
}

type previewModes struct {
	HostRouting          string `json:"hostRouting"`
	HostRoutingReason    string `json:"hostRoutingReason,omitempty"`
	BlockingKey          string `json:"blockingKey,omitempty"`
	Fix                  string `json:"fix,omitempty"`
	Masquerading         string `json:"masquerading"`
	KubeProxyReplacement bool   `json:"kubeProxyReplacement"`
	RoutingMode          string `json:"routingMode"`
	Datapath             string `json:"datapath"`
	// Errors are requests the node cannot honour: its agent would refuse
	// to start.
	Errors []string `json:"errors,omitempty"`
}

type configChange struct {
	Key             string `json:"key"`
	From            string `json:"from"`
	FromSource      string `json:"fromSource"`
	To              string `json:"to"`
	ToSource        string `json:"toSource"`
	RequiresRestart bool   `json:"requiresRestart"`
	Disruptive      bool   `json:"disruptive"`
	Note            string `json:"note,omitempty"`
}

type previewSummary struct {
	Changes        int `json:"changes"`
	RequireRestart int `json:"requireRestart"`
	MayDisrupt     int `json:"mayDisrupt"`
}

func newConfigPreview(node string, p *config.Preview, unmatched []string) configPreview {
	m := p.Modes
	pv := configPreview{Node: node, NodeConfigs: append([]string{}, p.Matching...), UnmatchedNodeConfigs: unmatched,
		ModeChanges: p.ModeChanges, Changes: []configChange{},
		Modes: previewModes{HostRouting: m.HostRouting.Mode, HostRoutingReason: m.HostRouting.Reason,
			BlockingKey: m.HostRouting.BlockingKey, Fix: m.HostRouting.Fix, Masquerading: m.Masquerading,
			KubeProxyReplacement: m.KubeProxyReplacement, RoutingMode: m.RoutingMode, Datapath: m.Datapath, Errors: m.Errors}}
	for _, w := range p.Warnings {
		pv.Warnings = append(pv.Warnings, w.Message)
	}
	for _, c := range p.Changes {
		pv.Changes = append(pv.Changes, configChange{Key: c.Key, From: c.From, FromSource: c.FromSource.String(), To: c.To,
			ToSource: c.ToSource.String(), RequiresRestart: c.RequiresRestart, Disruptive: c.Disruptive, Note: c.Note})
		pv.Summary.Changes++
		if c.RequiresRestart {
			pv.Summary.RequireRestart++
		}
		if c.Disruptive {
			pv.Summary.MayDisrupt++
		}
	}
	return pv
}

// renderPreview prints the preview; its lines use the labels of `glia
// status` ("Host Routing:", "Masquerading:", "KubeProxyReplacement:").
func renderPreview(w io.Writer, p configPreview) error {
	fmt.Fprintf(w, "Preview for %s (takes effect when its agent restarts; nothing was changed)\n", p.Node)
	if len(p.NodeConfigs) == 0 {
		fmt.Fprintf(w, "Node configs: none selects %s\n", p.Node)
	} else {
		fmt.Fprintf(w, "Node configs: %s (in precedence order, later wins)\n", strings.Join(p.NodeConfigs, ", "))
	}
	for _, u := range p.UnmatchedNodeConfigs {
		fmt.Fprintf(w, "Warning: GliaNodeConfig %s selects no node: check its spec.nodeSelector against the nodes' labels\n", u)
	}
	for _, warn := range p.Warnings {
		fmt.Fprintf(w, "Warning: %s\n", warn)
	}
	m := p.Modes
	hr := m.HostRouting
	if m.HostRoutingReason != "" && hr != config.HostRoutingBPF {
		hr += " (" + m.HostRoutingReason + ")"
	}
	fmt.Fprintf(w, "Host Routing: %s\n", hr)
	fmt.Fprintf(w, "Masquerading: %s\n", m.Masquerading)
	fmt.Fprintf(w, "KubeProxyReplacement: %s\n", trueFalse(m.KubeProxyReplacement))
	fmt.Fprintf(w, "Routing: %s\n", m.RoutingMode)
	for _, e := range m.Errors {
		fmt.Fprintf(w, "ERROR: %s (the agent would refuse to start)\n", e)
	}
	if len(p.Changes) == 0 && len(p.ModeChanges) == 0 {
		fmt.Fprintln(w, "Changes: none: the node runs this config already")
		return nil
	}
	fmt.Fprintln(w, "Datapath changes:")
	for _, mc := range p.ModeChanges {
		fmt.Fprintf(w, "  %s\n", mc)
	}
	fmt.Fprintln(w, "Config changes:")
	for _, c := range p.Changes {
		impact := "no traffic disruption"
		if c.Disruptive {
			impact = "MAY DISRUPT TRAFFIC"
		}
		fmt.Fprintf(w, "  %s: %s (%s) -> %s (%s)\n      needs an agent restart: %t; %s: %s\n", c.Key, c.From, c.FromSource, c.To, c.ToSource, c.RequiresRestart, impact, c.Note)
	}
	fmt.Fprintf(w, "Summary: %d change(s), %d need an agent restart, %d may disrupt traffic\n", p.Summary.Changes, p.Summary.RequireRestart, p.Summary.MayDisrupt)
	return nil
}

// trueFalse is a boolean as `cilium status` prints it.
func trueFalse(b bool) string {
	if b {
		return "True"
	}
	return "False"
}
