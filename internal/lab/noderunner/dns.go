package noderunner

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// ResolvConf returns the resolv.conf of pod, following the kubelet's
// dnsPolicy rules, or ok=false when the pod uses the node's own
// /etc/resolv.conf (dnsPolicy Default, or ClusterFirst on the host network,
// or no cluster DNS configured).
func ResolvConf(pod *corev1.Pod, clusterDNS, domain string) (content string, ok bool) {
	var nameservers, searches []string
	options := []string{"ndots:5"}
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	if policy == corev1.DNSClusterFirst && pod.Spec.HostNetwork {
		policy = corev1.DNSDefault
	}
	switch policy {
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet:
		if clusterDNS == "" {
			return "", false
		}
		nameservers = []string{clusterDNS}
		searches = []string{pod.Namespace + ".svc." + domain, "svc." + domain, domain}
	case corev1.DNSNone:
		options = nil
	default: // Default: the node's resolv.conf
		if pod.Spec.DNSConfig == nil {
			return "", false
		}
		// dnsConfig on top of the node's file is not supported; say so in it.
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		nameservers = append(nameservers, dc.Nameservers...)
		searches = append(searches, dc.Searches...)
		for _, o := range dc.Options {
			opt := o.Name
			if o.Value != nil {
				opt += ":" + *o.Value
			}
			options = mergeOption(options, o.Name, opt)
		}
	}
	var b strings.Builder
	for _, ns := range nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if len(searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(searches, " "))
	}
	if len(options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	}
	return b.String(), true
}

func mergeOption(options []string, name, opt string) []string {
	for i, o := range options {
		if o == name || strings.HasPrefix(o, name+":") {
			options[i] = opt
			return options
		}
	}
	return append(options, opt)
}

// PodHostname returns the pod's hostname: spec.hostname, else its name.
func PodHostname(pod *corev1.Pod) string {
	if pod.Spec.Hostname != "" {
		return pod.Spec.Hostname
	}
	return pod.Name
}

// HostsFile returns the pod's /etc/hosts, as the kubelet writes it.
func HostsFile(pod *corev1.Pod, podIP, domain string) string {
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file (glia lab node runner).\n")
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	host := PodHostname(pod)
	if podIP != "" {
		if pod.Spec.Subdomain != "" {
			fmt.Fprintf(&b, "%s\t%s.%s.%s.svc.%s\t%s\n", podIP, host, pod.Spec.Subdomain, pod.Namespace, domain, host)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", podIP, host)
		}
	}
	for _, ha := range pod.Spec.HostAliases {
		if len(ha.Hostnames) > 0 {
			fmt.Fprintf(&b, "\n# Entries added by HostAliases.\n%s\t%s\n", ha.IP, strings.Join(ha.Hostnames, "\t"))
		}
	}
	return b.String()
}

// Corefile returns the CoreDNS configuration the runner gives coredns pods:
// the kubernetes plugin answers for the cluster domain and reverse zones,
// readiness is served on :8181/ready and health on :8080/health. The lab
// has no upstream resolver (no packet may leave the machine), so every other
// name is answered NXDOMAIN instead of being forwarded, and reverse names the
// cluster does not know get NXDOMAIN from the kubernetes plugin (no
// fallthrough: there is nothing to fall through to).
func Corefile(domain, kubeconfig string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:53 in-addr.arpa:53 ip6.arpa:53 {\n", domain)
	b.WriteString("    errors\n")
	b.WriteString("    health :8080\n")
	b.WriteString("    ready :8181\n")
	fmt.Fprintf(&b, "    kubernetes %s in-addr.arpa ip6.arpa {\n", domain)
	if kubeconfig != "" {
		fmt.Fprintf(&b, "        kubeconfig %s\n", kubeconfig)
	}
	b.WriteString("        pods insecure\n")
	b.WriteString("    }\n")
	b.WriteString("    cache 5\n")
	b.WriteString("}\n")
	b.WriteString(".:53 {\n")
	b.WriteString("    errors\n")
	b.WriteString("    template ANY ANY {\n")
	b.WriteString("        rcode NXDOMAIN\n")
	b.WriteString("    }\n")
	b.WriteString("}\n")
	return b.String()
}
