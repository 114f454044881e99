package config

import (
	"go/types"
	"reflect"
	"sort"
	"testing"

	"golang.org/x/tools/go/packages"
)

// Every config key is read by something: a key that is accepted, shown
// and resolved but changes nothing is a lie to the user. Each key has a
// field of Resolved (its tag names the key); this test loads every
// package of the module (tests aside) and fails for a field no code reads.
func TestEveryKeyHasAConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("loads and type-checks the whole module")
	}
	fields := map[string]string{} // field name -> key
	rt := reflect.TypeOf(Resolved{})
	for i := range rt.NumField() {
		f := rt.Field(i)
		if k := f.Tag.Get("key"); k != "" {
			if _, ok := LookupKey(k); !ok {
				t.Errorf("Resolved.%s is tagged with %q, which is no config key", f.Name, k)
			}
			fields[f.Name] = k
		}
	}
	for _, k := range Keys() {
		found := false
		for _, key := range fields {
			found = found || key == k.Name
		}
		if !found {
			t.Errorf("config key %s has no field in Resolved: add one (tagged key:%q) and read it", k.Name, k.Name)
		}
	}

	cfg := &packages.Config{Mode: packages.NeedName | packages.NeedTypes | packages.NeedTypesInfo | packages.NeedSyntax | packages.NeedImports,
		Dir: ".", Tests: false}
	pkgs, err := packages.Load(cfg, "glia.dev/glia/...")
	if err != nil {
		t.Fatal(err)
	}
	reads := map[string][]string{} // key -> packages reading it
	for _, p := range pkgs {
		for _, e := range p.Errors {
			t.Fatalf("%s: %v", p.PkgPath, e)
		}
		for _, sel := range p.TypesInfo.Selections {
			v, ok := sel.Obj().(*types.Var)
			if !ok || !v.IsField() || !isResolved(sel.Recv()) {
				continue
			}
			if key, ok := fields[v.Name()]; ok {
				reads[key] = append(reads[key], p.PkgPath)
			}
		}
	}
	var unread []string
	for _, key := range fields {
		if len(reads[key]) == 0 {
			unread = append(unread, key)
		}
	}
	sort.Strings(unread)
	for _, key := range unread {
		t.Errorf("config key %s is registered but nothing reads it: give it a consumer or remove it", key)
	}
}

// isResolved says whether t is config.Resolved (or a pointer to it).
func isResolved(t types.Type) bool {
	if p, ok := t.(*types.Pointer); ok {
		t = p.Elem()
	}
	n, ok := t.(*types.Named)
	return ok && n.Obj().Name() == "Resolved" && n.Obj().Pkg() != nil && n.Obj().Pkg().Path() == "glia.dev/glia/internal/config"
}
