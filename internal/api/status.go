package api

import "time"

// Status is the agent's answer on PathStatus: what the node runs, in which
// datapath mode, why, and where each setting came from. `glia status`
// renders it (internal/status); `glia status -o json` prints it as is.
type Status struct {
	NodeName string `json:"nodeName"`
	// Ready is what the agent's readiness probe answers: true when every
	// check in Readiness passes.
	Ready     bool             `json:"ready"`
	Readiness []ReadinessCheck `json:"readiness"`
	// Time is when the agent took this snapshot; relative times in the
	// rendered output ("3s ago") are computed against it.
	Time                 time.Time                  `json:"time"`
	Kubernetes           KubernetesStatus           `json:"kubernetes"`
	KubeProxyReplacement KubeProxyReplacementStatus `json:"kubeProxyReplacement"`
	HostRouting          HostRoutingStatus          `json:"hostRouting"`
	Masquerading         MasqueradingStatus         `json:"masquerading"`
	Routing              RoutingStatus              `json:"routing"`
	Policy               PolicyStatus               `json:"policy"`
	IPAM                 IPAMStatus                 `json:"ipam"`
	// ConfigSources lists every effective config key with the source that
	// set it, sorted by key.
	ConfigSources []ConfigSource `json:"configSources"`
	// ConfigWarnings are non-fatal findings of config resolution, e.g. a key
	// set by two GliaNodeConfigs that both select this node.
	ConfigWarnings []string `json:"configWarnings,omitempty"`
	// ConfigPending is what the config sources say now that differs from
	// the config the agent runs (it applies config only at start); nil when
	// nothing is pending or the agent has not read its sources yet.
	ConfigPending *ConfigPending     `json:"configPending,omitempty"`
	Controllers   []ControllerStatus `json:"controllers"`
	// Reconcilers are the reconcilers of the desired state, one per kind of
	// kernel object, with the status of their objects.
	Reconcilers []ReconcilerStatus `json:"reconcilers"`
	// ClusterHealth is nil when the health prober is not running.
	ClusterHealth *ClusterHealthStatus `json:"clusterHealth,omitempty"`
	Endpoints     int                  `json:"endpoints"`
	Services      int                  `json:"services"`
	// ServicesOutsideCIDR counts Services whose ClusterIP lies outside the
	// config key service-cidr.
	ServicesOutsideCIDR int    `json:"servicesOutsideCIDR,omitempty"`
	ServiceCIDR         string `json:"serviceCIDR,omitempty"`
	// Datapath names the datapath implementation in use, e.g. "legacy" or
	// "ebpf (tcx)".
	Datapath string `json:"datapath"`
	// AgentUptime is how long the agent has been running (JSON: nanoseconds).
	AgentUptime time.Duration `json:"agentUptime"`
	// Version and Commit are the agent binary's build (its
	// internal/version).
	Version string `json:"version,omitempty"`
	Commit  string `json:"commit,omitempty"`
	// MapMigrations are what the eBPF datapath did at start with pinned
	// maps of another layout version or size: entries it carried over and
	// entries it could not (counted, never dropped silently).
	MapMigrations []MapMigration `json:"mapMigrations,omitempty"`
}

// ConfigPending is a config change the agent has seen in its sources
// (ConfigMap glia-config, GliaNodeConfigs, its Node's labels) and applies
// only when its pod restarts: the keys that would change, or the error that
// the new sources would resolve to (the agent would refuse to start on it).
type ConfigPending struct {
	Changes []PendingChange `json:"changes,omitempty"`
	// Error is the resolution error of the sources as they are now; when
	// set, Changes is empty.
	Error string `json:"error,omitempty"`
	// Since is when the agent first saw this pending set.
	Since time.Time `json:"since"`
}

// PendingChange is one key whose effective value would change at restart.
type PendingChange struct {
	Key  string `json:"key"`
	From string `json:"from"`
	To   string `json:"to"`
	// Source is where the new value comes from, e.g. "GliaNodeConfig
	// glia-system/x" or "default" (the source that set it went away).
	Source     string `json:"source"`
	Disruptive bool   `json:"disruptive,omitempty"`
}

// MapMigration is what the agent did at start with one pinned map of
// another layout version or size.
type MapMigration struct {
	Map string `json:"map"`
	// Action is "migrated" (entries carried into a map of another layout
	// or size), "reset" (a layout it cannot migrate: a new, empty map),
	// or "merged" (a map an interrupted start left, merged into the
	// current one).
	Action      string `json:"action"`
	FromVersion uint32 `json:"fromVersion"`
	ToVersion   uint32 `json:"toVersion"`
	FromMax     uint32 `json:"fromMaxEntries"`
	ToMax       uint32 `json:"toMaxEntries"`
	Carried     int    `json:"carried"`
	Lost        int    `json:"lost"`
	// FlowsLost is Lost in flows for conntrack and NAT, else Lost.
	FlowsLost int    `json:"flowsLost"`
	Reason    string `json:"reason,omitempty"`
}

// KubernetesStatus is the agent's connection to the Kubernetes API, as
// observed: the last time the API server answered and the last error of
// a request or watch.
type KubernetesStatus struct {
	// State is "Ok" when the watches have synced and the API server
	// answered recently, else "Error: " and what failed.
	State       string    `json:"state"`
	Version     string    `json:"version,omitempty"` // e.g. v1.37.2
	LastSuccess time.Time `json:"lastSuccess,omitempty"`
	LastError   string    `json:"lastError,omitempty"`
}

// ReadinessCheck is one condition of the agent's readiness: the readiness
// probe (/readyz) fails, naming the check, while any is not OK.
type ReadinessCheck struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Message string `json:"message,omitempty"` // what is wrong, or what is observed
}

// KubeProxyReplacementStatus says whether glia load-balances Services.
type KubeProxyReplacementStatus struct {
	Enabled bool `json:"enabled"`
	// Devices are the devices the service datapath is attached to, each
	// rendered as given, e.g. "eth0 198.18.0.2".
	Devices []string `json:"devices,omitempty"`
	// Reason says why it is (not) enabled and which source set it.
	Reason string `json:"reason,omitempty"`
}

// HostRoutingStatus is the host-routing mode and why it was chosen.
type HostRoutingStatus struct {
	Mode        string `json:"mode"`                  // "BPF" or "Legacy"
	Reason      string `json:"reason,omitempty"`      // why this mode
	BlockingKey string `json:"blockingKey,omitempty"` // the config key that blocks BPF host routing, if any
	Fix         string `json:"fix,omitempty"`         // the change that would enable BPF host routing
}

// MasqueradingStatus is how traffic leaving the cluster is SNATed.
type MasqueradingStatus struct {
	Mode   string `json:"mode"`             // "BPF", "IPTables" or "Disabled"
	Device string `json:"device,omitempty"` // BPF: the device SNAT happens on
	CIDR   string `json:"cidr,omitempty"`   // BPF: the source range that is masqueraded
	IPv4   bool   `json:"ipv4"`
}

// RoutingStatus is how pod traffic crosses nodes.
type RoutingStatus struct {
	Mode                 string `json:"mode"` // "native" or "tunnel"
	AutoDirectNodeRoutes bool   `json:"autoDirectNodeRoutes"`
	TunnelProtocol       string `json:"tunnelProtocol,omitempty"` // "vxlan" in tunnel mode
}

// IPAMStatus is the node's pod address pool.
type IPAMStatus struct {
	PodCIDR   string `json:"podCIDR"`
	Allocated int    `json:"allocated"`
	Size      int    `json:"size"` // usable addresses in PodCIDR
	// Addresses lists allocated addresses, optionally followed by their
	// owner ("198.19.1.5 (default/web-1)"); filled for verbose requests.
	Addresses []string `json:"addresses,omitempty"`
}

// ConfigSource is one effective config key and where its value came from.
type ConfigSource struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	// Source is the human form: "default", "flag --mtu",
	// "ConfigMap glia-system/glia-config",
	// "GliaNodeConfig glia-system/enable-ebpf".
	Source string `json:"source"`
	// Kind is the machine form of Source's layer: "default", "flag",
	// "configmap" or "nodeconfig".
	Kind string `json:"kind,omitempty"`
	// Overridden lists lower-precedence sources that also set the key.
	Overridden []string `json:"overridden,omitempty"`
}

// ControllerStatus is one of the agent's reconcile loops.
type ControllerStatus struct {
	Name        string    `json:"name"`
	LastSuccess time.Time `json:"lastSuccess"`
	LastError   string    `json:"lastError,omitempty"`
	// Failures counts consecutive failures since the last success; a
	// controller is healthy when it is 0.
	Failures int `json:"failures"`
}

// ReconcilerStatus is one reconciler: how many objects of its table are
// programmed (done), waiting (pending) or failing (error), the failing
// ones with their errors, and how many drifted objects it repaired.
type ReconcilerStatus struct {
	Name    string   `json:"name"`
	Objects int      `json:"objects"`
	Done    int      `json:"done"`
	Pending int      `json:"pending"`
	Errors  int      `json:"errors"`
	Failing []string `json:"failing,omitempty"` // up to 5, "object: error"
	Repairs uint64   `json:"repairs"`
}

// ClusterHealthStatus is the result of the last health probe round.
type ClusterHealthStatus struct {
	Reachable   int       `json:"reachable"`
	Total       int       `json:"total"`
	ProbeTime   time.Time `json:"probeTime"`
	Unreachable []string  `json:"unreachable,omitempty"` // node names
}

// PolicyStatus is network policy on the node.
type PolicyStatus struct {
	// State is "Enabled" once the node's policy is computed and in the
	// maps, "Starting" before, or "Error: " and why (the maps cannot hold
	// it: isolated endpoints then deny everything).
	State string `json:"state"`
	// Isolated counts the local endpoints some NetworkPolicy isolates, of
	// Endpoints.
	Isolated   int `json:"isolated"`
	Endpoints  int `json:"endpoints"`
	Policies   int `json:"policies"`   // NetworkPolicies in the cluster
	Identities int `json:"identities"` // security identities
	// DeniedIngress, DeniedEgress count the packets denied on this node.
	DeniedIngress uint64 `json:"deniedIngress"`
	DeniedEgress  uint64 `json:"deniedEgress"`
}
