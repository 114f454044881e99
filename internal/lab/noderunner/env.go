package noderunner

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// imagePath is the image's PATH (every catalog image has the Debian
// default), which the container's env may override.
const imagePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// expandVars replaces $(NAME) in s as kubelet does for env values, command
// and args: a defined NAME is replaced by its value, an undefined one is
// left as written, "$$" is a literal "$", and any other "$" stays.
func expandVars(s string, lookup func(string) (string, bool)) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// podFieldValue returns a fieldRef's value for env (volume=false) or a
// downwardAPI volume (volume=true, which also allows metadata.labels and
// metadata.annotations whole).
func podFieldValue(pod *corev1.Pod, path string, podIPs []string, hostIP string, volume bool) (string, error) {
	if key, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[key], nil
	}
	if key, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[key], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		if !volume {
			return pod.Spec.NodeName, nil
		}
	case "spec.serviceAccountName":
		if !volume {
			return pod.Spec.ServiceAccountName, nil
		}
	case "status.hostIP", "status.hostIPs":
		if !volume {
			return hostIP, nil
		}
	case "status.podIP":
		if !volume && len(podIPs) > 0 {
			return podIPs[0], nil
		} else if !volume {
			return "", nil
		}
	case "status.podIPs":
		if !volume {
			return strings.Join(podIPs, ","), nil
		}
	case "metadata.labels":
		if volume {
			return formatMap(pod.Labels), nil
		}
	case "metadata.annotations":
		if volume {
			return formatMap(pod.Annotations), nil
		}
	}
	where := "env"
	if volume {
		where = "a downwardAPI volume"
	}
	return "", fmt.Errorf("fieldRef %q is not supported in %s", path, where)
}

// subscript parses prefix['key'].
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok || !strings.HasSuffix(rest, "']") {
		return "", false
	}
	return strings.TrimSuffix(rest, "']"), true
}

// formatMap renders labels or annotations as downwardAPI files do: one
// key="value" line per entry, sorted, values quoted.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	lines := make([]string, 0, len(keys))
	for _, k := range keys {
		lines = append(lines, fmt.Sprintf("%s=%q", k, m[k]))
	}
	return strings.Join(lines, "\n")
}

// resourceFieldValue returns a resourceFieldRef's value for container c:
// the limit or request divided by the divisor, rounded up; an unset limit
// is the node's allocatable.
func resourceFieldValue(pod *corev1.Pod, c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	if ref.ContainerName != "" {
		c = nil
		for _, x := range allContainers(pod) {
			if x.Name == ref.ContainerName {
				c = x
			}
		}
		if c == nil {
			return "", fmt.Errorf("resourceFieldRef names container %q, which the pod does not have", ref.ContainerName)
		}
	}
	if c == nil {
		return "", fmt.Errorf("resourceFieldRef %q needs a containerName", ref.Resource)
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("resourceFieldRef %q is not supported", ref.Resource)
	}
	res := corev1.ResourceName(name)
	var q resource.Quantity
	var set bool
	if kind == "limits" {
		q, set = c.Resources.Limits[res]
		if !set {
			q, set = nodeAllocatable()[res]
		}
	} else {
		q, set = c.Resources.Requests[res]
		if !set {
			q, set = resource.Quantity{}, true
		}
	}
	if !set && !strings.HasPrefix(name, "hugepages-") {
		return "", fmt.Errorf("resourceFieldRef %q is not supported", ref.Resource)
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if res == corev1.ResourceCPU {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

// validEnvName is the API's relaxed rule for names taken from envFrom:
// printable ASCII without '='.
func validEnvName(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if r < ' ' || r > '~' || r == '=' {
			return false
		}
	}
	return true
}

// serviceEnv returns the Docker-link style variables of svc
// (FOO_SERVICE_HOST, FOO_SERVICE_PORT, FOO_PORT_80_TCP…).
func serviceEnv(svc *corev1.Service) map[string]string {
	out := map[string]string{}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
		return out
	}
	name := strings.ToUpper(strings.ReplaceAll(svc.Name, "-", "_"))
	ip := svc.Spec.ClusterIP
	first := svc.Spec.Ports[0]
	out[name+"_SERVICE_HOST"] = ip
	out[name+"_SERVICE_PORT"] = strconv.Itoa(int(first.Port))
	for _, p := range svc.Spec.Ports {
		if p.Name != "" {
			out[name+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_"))] = strconv.Itoa(int(p.Port))
		}
	}
	proto := func(p corev1.ServicePort) string {
		if p.Protocol == "" {
			return "tcp" // the API's default
		}
		return strings.ToLower(string(p.Protocol))
	}
	url := func(p corev1.ServicePort) string {
		return fmt.Sprintf("%s://%s:%d", proto(p), ip, p.Port)
	}
	out[name+"_PORT"] = url(first)
	for _, p := range svc.Spec.Ports {
		prefix := fmt.Sprintf("%s_PORT_%d_%s", name, p.Port, strings.ToUpper(proto(p)))
		out[prefix] = url(p)
		out[prefix+"_PROTO"] = proto(p)
		out[prefix+"_PORT"] = strconv.Itoa(int(p.Port))
		out[prefix+"_ADDR"] = ip
	}
	return out
}

// envError is a container config error (CreateContainerConfigError).
type envError struct{ err error }

func (e envError) Error() string { return e.err.Error() }
func (e envError) Unwrap() error { return e.err }

// envBuilder fetches what a container's environment refers to.
type envBuilder struct {
	r       *runner
	ctx     context.Context
	pod     *corev1.Pod
	podIPs  []string
	cms     map[string]*corev1.ConfigMap
	secrets map[string]*corev1.Secret
}

func (b *envBuilder) configMap(name string) (*corev1.ConfigMap, error) {
	if cm, ok := b.cms[name]; ok {
		return cm, nil
	}
	cm, err := b.r.client.CoreV1().ConfigMaps(b.pod.Namespace).Get(b.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get configmap %s/%s: %w", b.pod.Namespace, name, err)
	}
	b.cms[name] = cm
	return cm, nil
}

func (b *envBuilder) secret(name string) (*corev1.Secret, error) {
	if s, ok := b.secrets[name]; ok {
		return s, nil
	}
	s, err := b.r.client.CoreV1().Secrets(b.pod.Namespace).Get(b.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		s, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get secret %s/%s: %w", b.pod.Namespace, name, err)
	}
	b.secrets[name] = s
	return s, nil
}

// containerEnv builds container c's environment as kubelet and the runtime
// do: HOSTNAME and the image's PATH, then envFrom and env in order ($(VAR)
// expanded against what is defined so far and the service variables), then
// the service variables nothing else set. A reference that cannot be
// resolved is an envError.
func (r *runner) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container, podIPs []string) ([]string, error) {
	b := &envBuilder{r: r, ctx: ctx, pod: pod, podIPs: podIPs, cms: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	var keys []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	set("PATH", imagePath)
	set("HOSTNAME", podHostnameFor(pod, r.cfg))
	svcEnv, err := r.serviceEnvFor(ctx, pod)
	if err != nil {
		return nil, err
	}

	user := map[string]string{}
	var userKeys []string
	setUser := func(k, v string) {
		if _, ok := user[k]; !ok {
			userKeys = append(userKeys, k)
		}
		user[k] = v
	}
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, err := b.configMap(from.ConfigMapRef.Name)
			if err != nil {
				return nil, err
			}
			if cm == nil {
				if ptrTrue(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, envError{fmt.Errorf("configmap %q not found", from.ConfigMapRef.Name)}
			}
			data = cm.Data
		case from.SecretRef != nil:
			s, err := b.secret(from.SecretRef.Name)
			if err != nil {
				return nil, err
			}
			if s == nil {
				if ptrTrue(from.SecretRef.Optional) {
					continue
				}
				return nil, envError{fmt.Errorf("secret %q not found", from.SecretRef.Name)}
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		ks := make([]string, 0, len(data))
		for k := range data {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			name := from.Prefix + k
			if validEnvName(name) {
				setUser(name, data[k])
			}
		}
	}
	lookup := func(name string) (string, bool) {
		if v, ok := user[name]; ok {
			return v, true
		}
		v, ok := svcEnv[name]
		return v, ok
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			setUser(e.Name, expandVars(e.Value, lookup))
			continue
		}
		v, ok, err := b.valueFrom(c, e)
		if err != nil {
			return nil, err
		}
		if ok {
			setUser(e.Name, v)
		}
	}
	for _, k := range userKeys {
		set(k, user[k])
	}
	svcKeys := make([]string, 0, len(svcEnv))
	for k := range svcEnv {
		svcKeys = append(svcKeys, k)
	}
	sort.Strings(svcKeys)
	for _, k := range svcKeys {
		if _, ok := user[k]; !ok {
			set(k, svcEnv[k])
		}
	}
	env := make([]string, 0, len(keys))
	for _, k := range keys {
		env = append(env, k+"="+vals[k])
	}
	return env, nil
}

func ptrTrue(b *bool) bool { return b != nil && *b }

// valueFrom resolves one env var's valueFrom; ok=false skips the variable
// (an optional reference that is missing).
func (b *envBuilder) valueFrom(c *corev1.Container, e corev1.EnvVar) (string, bool, error) {
	src := e.ValueFrom
	switch {
	case src.FieldRef != nil:
		v, err := podFieldValue(b.pod, src.FieldRef.FieldPath, b.podIPs, b.r.cfg.NodeIP, false)
		if err != nil {
			return "", false, envError{fmt.Errorf("env %s: %w", e.Name, err)}
		}
		return v, true, nil
	case src.ResourceFieldRef != nil:
		v, err := resourceFieldValue(b.pod, c, src.ResourceFieldRef)
		if err != nil {
			return "", false, envError{fmt.Errorf("env %s: %w", e.Name, err)}
		}
		return v, true, nil
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := b.configMap(ref.Name)
		if err != nil {
			return "", false, err
		}
		if cm == nil {
			if ptrTrue(ref.Optional) {
				return "", false, nil
			}
			return "", false, envError{fmt.Errorf("configmap %q not found", ref.Name)}
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, true, nil
		}
		if v, ok := cm.BinaryData[ref.Key]; ok {
			return string(v), true, nil
		}
		if ptrTrue(ref.Optional) {
			return "", false, nil
		}
		return "", false, envError{fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, b.pod.Namespace, ref.Name)}
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := b.secret(ref.Name)
		if err != nil {
			return "", false, err
		}
		if s == nil {
			if ptrTrue(ref.Optional) {
				return "", false, nil
			}
			return "", false, envError{fmt.Errorf("secret %q not found", ref.Name)}
		}
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), true, nil
		}
		if ptrTrue(ref.Optional) {
			return "", false, nil
		}
		return "", false, envError{fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, b.pod.Namespace, ref.Name)}
	case src.FileKeyRef != nil:
		return "", false, envError{fmt.Errorf("env %s: fileKeyRef is not supported by the lab node runner", e.Name)}
	}
	return "", false, envError{fmt.Errorf("env %s: valueFrom names no source", e.Name)}
}

// serviceEnvFor returns the service variables of pod: the "kubernetes"
// Service's always, and, unless enableServiceLinks is false, every Service
// of the pod's namespace.
func (r *runner) serviceEnvFor(ctx context.Context, pod *corev1.Pod) (map[string]string, error) {
	out := map[string]string{}
	links := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	if links {
		list, err := r.client.CoreV1().Services(pod.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.Everything().String()})
		if err != nil {
			return nil, fmt.Errorf("list services for the environment: %w", err)
		}
		for i := range list.Items {
			for k, v := range serviceEnv(&list.Items[i]) {
				out[k] = v
			}
		}
	}
	if pod.Namespace != metav1.NamespaceDefault || !links {
		svc, err := r.client.CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("get the kubernetes service for the environment: %w", err)
		default:
			for k, v := range serviceEnv(svc) {
				out[k] = v
			}
		}
	}
	return out, nil
}

// expandCommand expands $(VAR) in a container's command and args with its
// environment, as kubelet does.
func expandCommand(argv, env []string) []string {
	vals := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	lookup := func(n string) (string, bool) { v, ok := vals[n]; return v, ok }
	if argv == nil {
		return nil
	}
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = expandVars(a, lookup)
	}
	return out
}
