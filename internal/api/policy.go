package api

import (
	"context"
	"net/http"
	"net/url"
)

// Network policy's paths: the endpoints' policies (`glia policy get`),
// what each selector matches (`glia policy selectors`) and the verdict of
// one connection (`glia policy trace`, query from, to, port).
const (
	PathPolicy          = "/v1/policy"
	PathPolicySelectors = "/v1/policy/selectors"
	PathPolicyTrace     = "/v1/policy/trace"
)

// PolicyDocument is the node's network policy.
type PolicyDocument struct {
	Node       string           `json:"node"`
	Identities int              `json:"identities"`
	Policies   []PolicySummary  `json:"policies"`
	Endpoints  []PolicyEndpoint `json:"endpoints"`
	// MapEntries counts glia_ipcache and glia_policy entries.
	IPCacheEntries int `json:"ipcacheEntries"`
	PolicyEntries  int `json:"policyEntries"`
}

// PolicySummary is one NetworkPolicy of the cluster, as glia reads it.
type PolicySummary struct {
	Name        string   `json:"name"`
	PodSelector string   `json:"podSelector"`
	Ingress     []string `json:"ingress,omitempty"` // one line per rule; nil: not an ingress policy
	Egress      []string `json:"egress,omitempty"`
	Types       []string `json:"types"`
}

// PolicyEndpoint is what one local endpoint enforces.
type PolicyEndpoint struct {
	IP       string        `json:"ip"`
	Pod      string        `json:"pod,omitempty"`
	Identity string        `json:"identity,omitempty"`
	Ingress  bool          `json:"ingress"` // isolated for ingress
	Egress   bool          `json:"egress"`
	PolicyID uint16        `json:"policyID"`
	Policies []string      `json:"policies,omitempty"` // those selecting it
	Allows   []PolicyAllow `json:"allows,omitempty"`
	Waiting  string        `json:"waiting,omitempty"`
}

// PolicyAllow is one compiled allow of an endpoint's policy.
type PolicyAllow struct {
	Direction string `json:"direction"`
	Peer      string `json:"peer"` // identity, or "any"
	Port      string `json:"port"` // e.g. TCP/80, TCP/8000-8080, UDP/*, any
	Rule      string `json:"rule"`
}

// PolicySelector is one selector of a policy and the identities it
// matches.
type PolicySelector struct {
	Policy     string   `json:"policy"`
	Where      string   `json:"where"` // podSelector, ingress[0].from[1], ...
	Selector   string   `json:"selector"`
	Identities []string `json:"identities"`
}

// PolicyStep is one side's verdict of a trace.
type PolicyStep struct {
	Direction string `json:"direction"`
	Pod       string `json:"pod,omitempty"`
	Allowed   bool   `json:"allowed"`
	Reason    string `json:"reason"`
}

// PolicyTrace is the verdict of one connection.
type PolicyTrace struct {
	From         string     `json:"from"`
	To           string     `json:"to"`
	FromIdentity string     `json:"fromIdentity"`
	ToIdentity   string     `json:"toIdentity"`
	Port         string     `json:"port"`
	Egress       PolicyStep `json:"egress"`
	Ingress      PolicyStep `json:"ingress"`
	Allowed      bool       `json:"allowed"`
	Lines        []string   `json:"lines"`
}

// PolicyTrace asks the agent whether from may open a connection to to on
// port ("N/proto"); from and to are pods (namespace/name) or addresses.
func (c *Client) PolicyTrace(ctx context.Context, from, to, port string) (PolicyTrace, error) {
	var out PolicyTrace
	err := c.do(ctx, http.MethodGet, PathPolicyTrace, url.Values{"from": {from}, "to": {to}, "port": {port}}, nil, &out)
	return out, err
}
