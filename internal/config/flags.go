package config

import (
	"fmt"

	"github.com/spf13/pflag"
)

// AddFlags registers one flag per config key on fs, named as the key
// (--enable-bpf-masquerade), and returns a function that, after parsing,
// gives the flags set explicitly on the command line, for Inputs.Flags.
// Flags left at their default are not returned: the built-in default is
// its own, lower, layer, so status can tell "default" from "flag".
func AddFlags(fs *pflag.FlagSet) func() map[string]string {
	for _, k := range Keys() {
		help := fmt.Sprintf("%s (%s)", k.Help, k.Allowed)
		fs.String(k.Name, k.Default, help)
	}
	return func() map[string]string {
		set := map[string]string{}
		fs.Visit(func(f *pflag.Flag) {
			if _, ok := LookupKey(f.Name); ok {
				set[f.Name] = f.Value.String()
			}
		})
		return set
	}
}
