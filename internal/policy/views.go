package policy

import "glia.dev/glia/internal/state"

// Accessors for the agent's `glia policy` views (package agent shapes them
// into the API's types; this package stays below the API).

// LocalNode is the node the result is for.
func (r *Result) LocalNode() string { return r.in.LocalNode }

// Policies are the cluster's NetworkPolicies the result was computed from.
func (r *Result) Policies() []*state.NetworkPolicy { return r.in.Policies }

// SortedIdentities are the identities, by number.
func (r *Result) SortedIdentities() []*Identity { return r.sortedIdentities() }

// PeerMatches says whether the policy p's peer matches identity id.
func (r *Result) PeerMatches(p *state.NetworkPolicy, peer state.Peer, id *Identity) bool {
	return r.peerMatches(p, peer, id)
}
