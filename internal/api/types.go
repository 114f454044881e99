// Package api defines the glia agent's local API: the JSON types exchanged
// over the agent's unix socket, the paths they are served on, and the error
// shape. The CNI plugin, the CLI and the agent share these definitions.
package api

import "time"

// Paths served by the agent on its unix socket (HTTP/1.1, JSON bodies).
const (
	PathHealthz   = "/v1/healthz"    // GET: 200 when the agent is ready; 503 with Error (code "not-ready") naming the failing checks
	PathStatus    = "/v1/status"     // GET: Status
	PathIPAM      = "/v1/ipam"       // POST: AllocateRequest -> Allocation; DELETE ?containerID=&ifName=
	PathEndpoints = "/v1/endpoints"  // GET: []Endpoint; PUT: Endpoint; DELETE ?containerID=&ifName=
	PathEndpoint  = "/v1/endpoint"   // GET ?containerID=&ifName= -> Endpoint (404 when unknown)
	PathGC        = "/v1/gc"         // POST: GCRequest -> GCResult
	PathCNIStatus = "/v1/cni-status" // GET: 200 ready; 503 with Error (code "exhausted") when no address is left
)

// MaxRequestBytes bounds every request body the agent reads.
const MaxRequestBytes = 64 << 10

// Attachment names one pod interface: the CNI (containerID, ifName) pair.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// AllocateRequest asks the agent for a pod address.
type AllocateRequest struct {
	Attachment
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
}

// Allocation is an address handed out by the agent's IPAM.
type Allocation struct {
	Attachment
	IP      string `json:"ip"`      // e.g. 198.19.1.5
	PodCIDR string `json:"podCIDR"` // the node's pod CIDR, e.g. 198.19.1.0/24
	Gateway string `json:"gateway"` // link-local next hop the pod routes through
	MTU     int    `json:"mtu"`     // MTU for the pod's interface
}

// Endpoint is a pod interface the agent knows and programs into the datapath.
type Endpoint struct {
	Attachment
	IP           string    `json:"ip"`
	Netns        string    `json:"netns"`
	HostIfName   string    `json:"hostIfName"` // host side of the veth, in the node's namespace
	HostIfIndex  int       `json:"hostIfIndex,omitempty"`
	HostMAC      string    `json:"hostMAC,omitempty"`
	PodMAC       string    `json:"podMAC,omitempty"`
	PodNamespace string    `json:"podNamespace,omitempty"`
	PodName      string    `json:"podName,omitempty"`
	Created      time.Time `json:"created,omitempty"`
}

// GCRequest lists the attachments the runtime still considers valid; every
// other endpoint and allocation is released.
type GCRequest struct {
	Valid []Attachment `json:"valid"`
}

// GCResult says what a GC released.
type GCResult struct {
	Released []Attachment `json:"released"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Code    string `json:"code"`    // machine-readable: "bad-request", "conflict", "not-found", "exhausted", "internal", "not-ready"
	Message string `json:"message"` // what went wrong and, where there is one, the fix
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }
