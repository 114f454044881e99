package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// Error codes carried in Error.Code.
const (
	CodeBadRequest = "bad-request"
	CodeConflict   = "conflict"
	CodeNotFound   = "not-found"
	CodeExhausted  = "exhausted"
	CodeInternal   = "internal"
	CodeNotReady   = "not-ready"
	CodeTooLarge   = "too-large"
)

// Errorf returns an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// IsCode says whether err is (or wraps) an *Error with code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// ErrAgentUnreachable is wrapped by every Client error that comes from not
// reaching the agent's socket at all (no socket, nobody listening, dial
// timeout), as opposed to an error answered by the agent.
var ErrAgentUnreachable = errors.New("glia agent is unreachable")

// Backend is what the agent serves on its socket. The endpoint manager
// implements it in the agent; Client implements it for callers. Errors meant
// for the caller are *Error; any other error is answered as "internal".
type Backend interface {
	// Allocate returns an address for the attachment. It refuses with
	// "conflict" when an endpoint for the attachment already exists and
	// returns the existing allocation when only that exists.
	Allocate(ctx context.Context, req AllocateRequest) (Allocation, error)
	// Release frees the attachment's address; unknown attachments succeed.
	Release(ctx context.Context, a Attachment) error
	// UpsertEndpoint records an endpoint and programs the datapath for it.
	UpsertEndpoint(ctx context.Context, ep Endpoint) error
	// DeleteEndpoint removes an endpoint, its datapath state and its
	// address; unknown attachments succeed.
	DeleteEndpoint(ctx context.Context, a Attachment) error
	// GetEndpoint returns one endpoint or "not-found".
	GetEndpoint(ctx context.Context, a Attachment) (Endpoint, error)
	// ListEndpoints returns every endpoint.
	ListEndpoints(ctx context.Context) ([]Endpoint, error)
	// GC releases every endpoint and allocation not listed as valid.
	GC(ctx context.Context, req GCRequest) (GCResult, error)
	// CNIStatus is nil when the agent can serve CNI ADDs.
	CNIStatus(ctx context.Context) error
}

// Key returns a string naming the attachment uniquely
// ("<containerID>/<ifName>"), as used for IPAM owners.
func (a Attachment) Key() string { return a.ContainerID + "/" + a.IfName }

// String implements fmt.Stringer.
func (a Attachment) String() string { return a.Key() }

// ParseAttachmentKey is the inverse of Attachment.Key. It fails for strings
// that are not the key of a valid attachment.
func ParseAttachmentKey(key string) (Attachment, bool) {
	id, ifName, ok := strings.Cut(key, "/")
	if !ok {
		return Attachment{}, false
	}
	a := Attachment{ContainerID: id, IfName: ifName}
	if ValidateAttachment(a) != nil {
		return Attachment{}, false
	}
	return a, true
}

var containerIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]*$`)

// MaxContainerIDLen bounds container IDs (runtimes use 64 hex characters).
const MaxContainerIDLen = 200

// ValidateContainerID checks a CNI container ID.
func ValidateContainerID(id string) error {
	if id == "" {
		return Errorf(CodeBadRequest, "container ID is empty")
	}
	if len(id) > MaxContainerIDLen {
		return Errorf(CodeBadRequest, "container ID is longer than %d characters", MaxContainerIDLen)
	}
	if !containerIDRE.MatchString(id) {
		return Errorf(CodeBadRequest, "container ID %q must match %s", id, containerIDRE)
	}
	return nil
}

// ValidateIfName checks an interface name by the Linux kernel's rules:
// 1 to 15 bytes, not "." or "..", no '/', ':' or whitespace.
func ValidateIfName(name string) error {
	switch {
	case name == "":
		return Errorf(CodeBadRequest, "interface name is empty")
	case len(name) > 15:
		return Errorf(CodeBadRequest, "interface name %q is longer than 15 bytes", name)
	case name == "." || name == "..":
		return Errorf(CodeBadRequest, "interface name %q is not allowed", name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || unicode.IsSpace(r) || r == 0 {
			return Errorf(CodeBadRequest, "interface name %q contains %q", name, r)
		}
	}
	return nil
}

// ValidateAttachment checks both halves of an attachment.
func ValidateAttachment(a Attachment) error {
	if err := ValidateContainerID(a.ContainerID); err != nil {
		return err
	}
	return ValidateIfName(a.IfName)
}

// HostIfName returns the name of the host side of the veth for an
// attachment: "gl" and the first 11 hex characters of
// sha256(containerID + "/" + ifName). The CNI plugin creates it under this
// name and the agent looks it up to tell live endpoints from orphans.
func HostIfName(a Attachment) string {
	sum := sha256.Sum256([]byte(a.ContainerID + "/" + a.IfName))
	return "gl" + hex.EncodeToString(sum[:])[:11]
}
