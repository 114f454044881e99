package config

import "fmt"

// Change is one key whose effective value differs between two configs.
type Change struct {
	Key             string
	From, To        string
	FromSource      Source
	ToSource        Source
	RequiresRestart bool
	Disruptive      bool
	// Note says how the change disrupts traffic, or why it does not.
	Note string
}

func (c Change) String() string {
	impact := "not disruptive"
	if c.Disruptive {
		impact = "DISRUPTIVE"
	}
	restart := ""
	if c.RequiresRestart {
		restart = ", needs an agent restart"
	}
	return fmt.Sprintf("%s: %q (%s) -> %q (%s)%s, %s: %s", c.Key, c.From, c.FromSource, c.To, c.ToSource, restart, impact, c.Note)
}

// Diff lists the keys whose effective value differs from current to
// proposed, sorted by key. A key that only moves to another source with the
// same value is not a change.
func Diff(current, proposed *Config) []Change {
	var out []Change
	for _, name := range keyNames() {
		a, b := current.values[name], proposed.values[name]
		if a.Raw == b.Raw {
			continue
		}
		k, _ := LookupKey(name)
		out = append(out, Change{
			Key: name, From: a.Raw, To: b.Raw,
			FromSource: a.Source, ToSource: b.Source,
			RequiresRestart: k.RequiresRestart,
			Disruptive:      k.Disruptive,
			Note:            k.DisruptionNote,
		})
	}
	return out
}

// Preview is what `glia config preview --node N` reports: the node's
// config resolved from the proposed inputs, its datapath modes, and how both
// differ from what the node runs now.
type Preview struct {
	Config      *Config
	Warnings    []Warning
	Matching    []string // full names of the node configs selecting the node, in precedence order
	Modes       Modes
	Changes     []Change
	ModeChanges []string
}

// NewPreview resolves proposed for a node running current (nil: unknown)
// with kernel k. The error is the resolution error; Modes.Errors carries the
// requests the node cannot honour.
func NewPreview(current *Config, proposed Inputs, k KernelProbe) (*Preview, error) {
	cfg, warnings, err := Resolve(proposed)
	if err != nil {
		return nil, err
	}
	matching, err := MatchingNodeConfigs(proposed.NodeConfigs, proposed.NodeLabels)
	if err != nil {
		return nil, err
	}
	p := &Preview{Config: cfg, Warnings: warnings, Modes: Decide(cfg.Typed(), k)}
	for _, nc := range matching {
		p.Matching = append(p.Matching, nc.FullName())
	}
	if current != nil {
		p.Changes = Diff(current, cfg)
		p.ModeChanges = DiffModes(Decide(current.Typed(), k), p.Modes)
	}
	return p, nil
}
