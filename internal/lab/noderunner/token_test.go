package noderunner

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// fakeTokens answers TokenRequests as the API server does, with unsigned
// JWTs whose claims name the bound pod; lifetime overrides the requested
// expiration when set (the API server may extend it).
type fakeTokens struct {
	mu       sync.Mutex
	issued   []string
	requests []*authenticationv1.TokenRequest
	now      func() time.Time
	lifetime time.Duration
}

func (f *fakeTokens) count() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.issued) }
func (f *fakeTokens) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.issued) == 0 {
		return ""
	}
	return f.issued[len(f.issued)-1]
}

func addTokenReactor(client *fake.Clientset) *fakeTokens {
	f := &fakeTokens{now: time.Now}
	client.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca, ok := a.(k8stesting.CreateAction)
		if !ok || a.GetSubresource() != "token" {
			return false, nil, nil
		}
		tr := ca.GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		sa := ca.(k8stesting.CreateActionImpl).Name
		f.mu.Lock()
		defer f.mu.Unlock()
		now := f.now()
		life := time.Duration(*tr.Spec.ExpirationSeconds) * time.Second
		if f.lifetime > 0 {
			life = f.lifetime
		}
		claims := map[string]any{
			"aud": tr.Spec.Audiences, "iat": now.Unix(), "exp": now.Add(life).Unix(),
			"iss": "https://kubernetes.default.svc.cluster.local",
			"sub": fmt.Sprintf("system:serviceaccount:%s:%s", a.GetNamespace(), sa),
			"kubernetes.io": map[string]any{
				"namespace":      a.GetNamespace(),
				"serviceaccount": map[string]any{"name": sa},
				"pod":            map[string]any{"name": tr.Spec.BoundObjectRef.Name, "uid": string(tr.Spec.BoundObjectRef.UID)},
			},
			"n": len(f.issued), // every token differs
		}
		b, _ := json.Marshal(claims)
		enc := base64.RawURLEncoding.EncodeToString
		tok := enc([]byte(`{"alg":"RS256","kid":"fake"}`)) + "." + enc(b) + "." + enc([]byte("not-signed"))
		f.issued = append(f.issued, tok)
		f.requests = append(f.requests, tr)
		tr.Status = authenticationv1.TokenRequestStatus{Token: tok, ExpirationTimestamp: metav1.NewTime(now.Add(life))}
		return true, tr, nil
	})
	return f
}

// jwtClaims decodes a JWT's claims (without checking its signature).
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWT", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("token claims: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatalf("token claims: %v", err)
	}
	return claims
}

func TestRefreshAt(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		life time.Duration
		want time.Duration
	}{
		{time.Hour, 48 * time.Minute},
		{3607 * time.Second, 2885600 * time.Millisecond},
		{10 * time.Minute, 8 * time.Minute},
		{365 * 24 * time.Hour, 24 * time.Hour}, // an extended token: at most a day old
	}
	for _, tt := range tests {
		if got := refreshAt(t0, t0.Add(tt.life)).Sub(t0); got != tt.want {
			t.Errorf("lifetime %s: refresh after %s, want %s", tt.life, got, tt.want)
		}
	}
}

func TestTokenManagerRotates(t *testing.T) {
	client := fake.NewClientset()
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	ft := addTokenReactor(client)
	ft.now = clock
	m := newTokenManager(client, clock)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "glia-x7", Namespace: "glia-system", UID: "uid-7"},
		Spec: corev1.PodSpec{ServiceAccountName: "glia"}}
	src := &corev1.ServiceAccountTokenProjection{Path: "token", Audience: "vault", ExpirationSeconds: ptr.To[int64](600)}

	tok1, err := m.get(context.Background(), pod, src)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwtClaims(t, tok1)
	k8s := claims["kubernetes.io"].(map[string]any)
	if p := k8s["pod"].(map[string]any); p["name"] != "glia-x7" || p["uid"] != "uid-7" || claims["sub"] != "system:serviceaccount:glia-system:glia" {
		t.Errorf("token claims do not name the pod and its service account: %v", claims)
	}
	req := ft.requests[0]
	if req.Spec.BoundObjectRef.Kind != "Pod" || *req.Spec.ExpirationSeconds != 600 || len(req.Spec.Audiences) != 1 || req.Spec.Audiences[0] != "vault" {
		t.Errorf("token request %+v", req.Spec)
	}
	if got := m.nextRefresh("uid-7").Sub(now); got != 8*time.Minute {
		t.Errorf("next refresh in %s, want 8m (80%% of 10m)", got)
	}

	steps := []struct {
		after     time.Duration
		wantCount int
	}{
		{7*time.Minute + 59*time.Second, 1}, // before 80%: cached
		{8 * time.Minute, 2},                // at 80%: rotated
		{8*time.Minute + 30*time.Second, 2},
		{16 * time.Minute, 3},
	}
	start := now
	for _, s := range steps {
		now = start.Add(s.after)
		tok, err := m.get(context.Background(), pod, src)
		if err != nil {
			t.Fatal(err)
		}
		if ft.count() != s.wantCount || tok != ft.last() {
			t.Errorf("at +%s: %d requests (want %d), token current=%t", s.after, ft.count(), s.wantCount, tok == ft.last())
		}
	}
	// The default service account and expiration.
	pod2 := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default", UID: "uid-8"}}
	if _, err := m.get(context.Background(), pod2, &corev1.ServiceAccountTokenProjection{Path: "token"}); err != nil {
		t.Fatal(err)
	}
	if r := ft.requests[len(ft.requests)-1]; *r.Spec.ExpirationSeconds != 3600 || r.Spec.Audiences != nil {
		t.Errorf("defaults: %+v", r.Spec)
	}
	if c := jwtClaims(t, ft.last()); c["sub"] != "system:serviceaccount:default:default" {
		t.Errorf("default service account: %v", c["sub"])
	}
	m.forget("uid-7")
	if !m.nextRefresh("uid-7").IsZero() {
		t.Error("forgotten pod still has tokens")
	}
}
