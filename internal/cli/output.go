package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/cli-runtime/pkg/printers"
)

// OutputAPIVersion is the apiVersion of the objects glia prints with -o
// json, yaml or jsonpath: they are the CLI's output, not objects a cluster
// serves. Every object has a kind; a list is a kind ending in "List" with
// its rows in items, as kubectl prints lists.
const OutputAPIVersion = "cli.glia.dev/v1alpha1"

// Output formats of -o. text is each command's own human form; the others
// are the Kubernetes CLI printers of k8s.io/cli-runtime.
var outputFormats = []string{"text", "json", "yaml", "jsonpath=TEMPLATE", "jsonpath-as-json=TEMPLATE", "jsonpath-file=FILE"}

// outputFlag is the value of -o/--output: a format checked when the flag is
// parsed, so a wrong one is a usage error before anything is asked of an
// agent or a cluster.
type outputFlag struct {
	format  string // "text", "json", "yaml" or a jsonpath form
	printer printers.ResourcePrinter
}

func (o *outputFlag) String() string {
	if o.format == "" {
		return "text"
	}
	return o.format
}

func (o *outputFlag) Type() string { return "format" }

// Set parses a format; a jsonpath template is parsed here too.
func (o *outputFlag) Set(s string) error {
	p, err := newPrinter(s)
	if err != nil {
		return err
	}
	o.format, o.printer = s, p
	return nil
}

// text says whether the command prints its text form.
func (o *outputFlag) text() bool { return o.printer == nil }

// newPrinter returns the printer of a format; nil for text.
func newPrinter(format string) (printers.ResourcePrinter, error) {
	switch format {
	case "", "text":
		return nil, nil
	case "json":
		return &printers.JSONPrinter{}, nil
	case "yaml":
		return &printers.YAMLPrinter{}, nil
	}
	name, arg, hasArg := strings.Cut(format, "=")
	switch name {
	case "jsonpath", "jsonpath-as-json", "jsonpath-file":
		if !hasArg || arg == "" {
			return nil, fmt.Errorf("-o %s needs a template: -o %s='{.kind}'", name, name)
		}
		tmpl := arg
		if name == "jsonpath-file" {
			b, err := os.ReadFile(arg)
			if err != nil {
				return nil, fmt.Errorf("-o %s: %w", format, err)
			}
			tmpl = string(b)
		}
		p, err := printers.NewJSONPathPrinter(tmpl)
		if err != nil {
			return nil, fmt.Errorf("-o %s: bad template: %w", format, err)
		}
		// As kubectl: a missing key prints nothing rather than failing.
		p.AllowMissingKeys(true)
		p.EnableJSONOutput(name == "jsonpath-as-json")
		return p, nil
	}
	return nil, fmt.Errorf("unknown output format %q: use one of %s", format, strings.Join(outputFormats, ", "))
}

// addOutputFlag registers -o/--output on fs of cmd.
func addOutputFlag(cmd *cobra.Command, o *outputFlag, persistent bool) {
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	fs.VarP(o, "output", "o", "output format: "+strings.Join(outputFormats, ", "))
}

// print writes v as the object kind with the chosen printer, or calls text.
// v is any value that encodes to a JSON object (kind set on it) or, for a
// kind ending in "List", to a JSON array (the items).
func (o *outputFlag) print(w io.Writer, kind string, v any, text func(io.Writer) error) error {
	if o.text() {
		return text(w)
	}
	obj, err := toObject(kind, v)
	if err != nil {
		return err
	}
	return o.printer.PrintObj(obj, w)
}

// toObject turns v into an object of OutputAPIVersion and kind for the
// cli-runtime printers.
func toObject(kind string, v any) (*unstructured.Unstructured, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", kind, err)
	}
	var content map[string]any
	if strings.HasSuffix(kind, "List") && isList(v) {
		var items []any
		if err := utiljson.Unmarshal(b, &items); err != nil {
			return nil, fmt.Errorf("encode %s: %w", kind, err)
		}
		if items == nil {
			items = []any{}
		}
		content = map[string]any{"items": items}
	} else {
		if err := utiljson.Unmarshal(b, &content); err != nil {
			return nil, fmt.Errorf("encode %s: %w", kind, err)
		}
		if content == nil {
			return nil, errors.New("encode " + kind + ": not an object")
		}
	}
	u := &unstructured.Unstructured{Object: content}
	u.SetAPIVersion(OutputAPIVersion)
	u.SetKind(kind)
	return u, nil
}

func isList(v any) bool {
	k := reflect.TypeOf(v).Kind()
	return k == reflect.Slice || k == reflect.Array
}
