package noderunner

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestResolvConf(t *testing.T) {
	pod := func(mut func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"}}
		if mut != nil {
			mut(p)
		}
		return p
	}
	tests := []struct {
		name   string
		pod    *corev1.Pod
		dns    string
		want   string
		wantOK bool
	}{
		{
			name:   "cluster first",
			pod:    pod(nil),
			dns:    "198.18.128.10",
			want:   "nameserver 198.18.128.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
			wantOK: true,
		},
		{
			name: "host network with cluster first uses the node's file",
			pod:  pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
			dns:  "198.18.128.10",
		},
		{
			name: "cluster first with host net",
			pod: pod(func(p *corev1.Pod) {
				p.Spec.HostNetwork = true
				p.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
			}),
			dns:    "198.18.128.10",
			want:   "nameserver 198.18.128.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
			wantOK: true,
		},
		{
			name: "default policy",
			pod:  pod(func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }),
			dns:  "198.18.128.10",
		},
		{
			name: "no cluster dns configured",
			pod:  pod(nil),
		},
		{
			name: "none with dns config",
			pod: pod(func(p *corev1.Pod) {
				p.Spec.DNSPolicy = corev1.DNSNone
				p.Spec.DNSConfig = &corev1.PodDNSConfig{
					Nameservers: []string{"198.18.128.53"},
					Searches:    []string{"example.internal"},
					Options:     []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("2")}, {Name: "edns0"}},
				}
			}),
			dns:    "198.18.128.10",
			want:   "nameserver 198.18.128.53\nsearch example.internal\noptions ndots:2 edns0\n",
			wantOK: true,
		},
		{
			name: "cluster first with options override",
			pod: pod(func(p *corev1.Pod) {
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("1")}}}
			}),
			dns:    "198.18.128.10",
			want:   "nameserver 198.18.128.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:1\n",
			wantOK: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ResolvConf(tt.pod, tt.dns, "cluster.local")
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("resolv.conf mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHostsFile(t *testing.T) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop"},
		Spec: corev1.PodSpec{
			Subdomain:   "web",
			HostAliases: []corev1.HostAlias{{IP: "198.18.0.1", Hostnames: []string{"api.lab", "cp.lab"}}},
		},
	}
	want := "# Kubernetes-managed hosts file (glia lab node runner).\n" +
		"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n" +
		"198.19.1.5\tweb-0.web.shop.svc.cluster.local\tweb-0\n" +
		"\n# Entries added by HostAliases.\n198.18.0.1\tapi.lab\tcp.lab\n"
	if diff := cmp.Diff(want, HostsFile(p, "198.19.1.5", "cluster.local")); diff != "" {
		t.Errorf("hosts mismatch (-want +got):\n%s", diff)
	}
}

func TestCorefile(t *testing.T) {
	want := `cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig /run/glia-lab/kubeconfig
        pods insecure
    }
    cache 5
}
.:53 {
    errors
    template ANY ANY {
        rcode NXDOMAIN
    }
}
`
	if diff := cmp.Diff(want, Corefile("cluster.local", "/run/glia-lab/kubeconfig")); diff != "" {
		t.Errorf("Corefile mismatch (-want +got):\n%s", diff)
	}
}

func TestPodNetNSName(t *testing.T) {
	tests := []struct{ node, uid, want string }{
		{"lab-node-1", "4f1c2a9e-1b2c-4d5e-8f90-123456789abc", "glia-pod-lab-node-1-4f1c2a9e"},
		{"n2", "abc", "glia-pod-n2-abc"},
	}
	for _, tt := range tests {
		if got := PodNetNSName(tt.node, tt.uid); got != tt.want {
			t.Errorf("PodNetNSName(%q, %q) = %q, want %q", tt.node, tt.uid, got, tt.want)
		}
	}
}
