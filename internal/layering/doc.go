// Package layering holds no code: its test states and enforces the import
// rules that keep the agent's flow visible in its packages —
//
//	Kubernetes (k8s), socket API (api, endpoint)
//	    → desired state (state)
//	    → reconcilers (reconcile)
//	    → kernel (datapath: linux shared, legacy and bpf beside each other)
//
// with status, metrics and health reading the same state (agent wires
// them). The rules: the desired state imports no other glia package but
// config (the decision it holds is config's); the
// Kubernetes edge writes the state and never reaches the datapath; the
// datapaths reach neither Kubernetes nor the socket API nor the
// reconcilers, and never each other; the wire package (api) imports no
// other glia package; the CNI plugin stays free of the agent's state
// machinery; and the import graph has no cycle.
package layering
