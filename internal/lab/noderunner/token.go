package noderunner

import (
	"context"
	"fmt"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

const (
	// defaultTokenExpiration is serviceAccountToken's default
	// expirationSeconds.
	defaultTokenExpiration = int64(3600)
	// tokenMaxAge: a token older than this is refreshed whatever its
	// lifetime (kubelet's rule for long-lived tokens).
	tokenMaxAge = 24 * time.Hour
)

// tokenManager gets service account tokens bound to pods through the
// TokenRequest API and decides when to rotate them: once 80% of a token's
// lifetime has passed, or it is older than 24 hours.
type tokenManager struct {
	client kubernetes.Interface
	now    func() time.Time

	mu    sync.Mutex
	cache map[tokenKey]*issuedToken
}

type tokenKey struct {
	pod       types.UID
	sa        string
	audience  string
	expSecond int64
}

type issuedToken struct {
	token           string
	issued, expires time.Time
}

func newTokenManager(client kubernetes.Interface, now func() time.Time) *tokenManager {
	return &tokenManager{client: client, now: now, cache: map[tokenKey]*issuedToken{}}
}

// refreshAt is when a token issued at issued and expiring at expires must
// be replaced.
func refreshAt(issued, expires time.Time) time.Time {
	at := issued.Add(expires.Sub(issued) * 8 / 10)
	if limit := issued.Add(tokenMaxAge); limit.Before(at) {
		at = limit
	}
	return at
}

// get returns a token for pod's service account, requesting one when none is
// cached or the cached one is due for rotation.
func (m *tokenManager) get(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	exp := defaultTokenExpiration
	if src.ExpirationSeconds != nil {
		exp = *src.ExpirationSeconds
	}
	key := tokenKey{pod: pod.UID, sa: sa, audience: src.Audience, expSecond: exp}
	now := m.now()
	m.mu.Lock()
	cached := m.cache[key]
	m.mu.Unlock()
	if cached != nil && now.Before(refreshAt(cached.issued, cached.expires)) {
		return cached.token, nil
	}
	tr := &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To(exp),
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
			},
		},
	}
	if src.Audience != "" {
		tr.Spec.Audiences = []string{src.Audience}
	}
	out, err := m.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		if cached != nil && now.Before(cached.expires) {
			// Keep serving the valid token; the next sync retries.
			return cached.token, nil
		}
		return "", fmt.Errorf("request a token for service account %s/%s: %w", pod.Namespace, sa, err)
	}
	if out.Status.Token == "" {
		return "", fmt.Errorf("token request for service account %s/%s returned no token", pod.Namespace, sa)
	}
	expires := out.Status.ExpirationTimestamp.Time
	if expires.IsZero() || !expires.After(now) {
		expires = now.Add(time.Duration(exp) * time.Second)
	}
	m.mu.Lock()
	m.cache[key] = &issuedToken{token: out.Status.Token, issued: now, expires: expires}
	m.mu.Unlock()
	return out.Status.Token, nil
}

// nextRefresh is the earliest time one of pod's tokens is due for rotation
// (zero when it has none).
func (m *tokenManager) nextRefresh(pod types.UID) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next time.Time
	for k, t := range m.cache {
		if k.pod != pod {
			continue
		}
		if at := refreshAt(t.issued, t.expires); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// forget drops pod's tokens.
func (m *tokenManager) forget(pod types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.cache {
		if k.pod == pod {
			delete(m.cache, k)
		}
	}
}
