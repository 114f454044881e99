{{/*
Labels of every object of the chart.
*/}}
{{- define "glia.labels" -}}
app.kubernetes.io/name: glia
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: glia
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/*
The agent image reference: repository:tag, tag defaulting to appVersion.
*/}}
{{- define "glia.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end }}

{{/*
The agent's network device (values.devices: a name or a one-item list).
*/}}
{{- define "glia.device" -}}
{{- if kindIs "slice" .Values.devices -}}{{ first .Values.devices }}{{- else -}}{{ .Values.devices }}{{- end -}}
{{- end }}

{{/*
A config value in the syntax internal/config accepts: booleans as
"true"/"false", integers in decimal (values.yaml numbers arrive as floats).
*/}}
{{- define "glia.configValue" -}}
{{- if kindIs "bool" . -}}{{ ternary "true" "false" . }}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}{{ int64 . }}
{{- else -}}{{ toString . }}
{{- end -}}
{{- end }}

{{/*
The data of ConfigMap glia-config as YAML: every config key a named value
renders, then extraConfig over them. Keys are glia's (internal/config/keys.go);
deploy.ValueForKey maps each key to its value.
*/}}
{{- define "glia.configData" -}}
{{- $v := .Values -}}
{{- $c := dict -}}
{{- $kpr := $v.kubeProxyReplacement -}}
{{- if kindIs "bool" $kpr -}}
{{- $_ := set $c "kube-proxy-replacement" (ternary "true" "false" $kpr) -}}
{{- else if eq $kpr "true" "strict" -}}
{{- $_ := set $c "kube-proxy-replacement" "true" -}}
{{- else if eq $kpr "false" "disabled" -}}
{{- $_ := set $c "kube-proxy-replacement" "false" -}}
{{- else -}}
{{- fail (printf "kubeProxyReplacement: %q is not allowed: use true or false (Cilium's \"strict\" and \"disabled\" also work)" (toString $kpr)) -}}
{{- end -}}
{{- $_ := set $c "routing-mode" $v.routingMode -}}
{{- $_ := set $c "tunnel-protocol" $v.tunnelProtocol -}}
{{- $_ := set $c "auto-direct-node-routes" (include "glia.configValue" $v.autoDirectNodeRoutes) -}}
{{- $_ := set $c "enable-ipv4-masquerade" (include "glia.configValue" $v.enableIPv4Masquerade) -}}
{{- $_ := set $c "enable-bpf-masquerade" (include "glia.configValue" $v.bpf.masquerade) -}}
{{- if not (kindIs "invalid" $v.bpf.hostLegacyRouting) -}}
{{- $_ := set $c "enable-host-legacy-routing" (include "glia.configValue" $v.bpf.hostLegacyRouting) -}}
{{- end -}}
{{- $_ := set $c "bpf-lb-map-max" (include "glia.configValue" $v.bpf.lbMapMax) -}}
{{- $_ := set $c "bpf-ct-map-max" (include "glia.configValue" $v.bpf.ctMapMax) -}}
{{- $_ := set $c "bpf-nat-map-max" (include "glia.configValue" $v.bpf.natMax) -}}
{{- $_ := set $c "bpf-lb-algorithm" $v.loadBalancer.algorithm -}}
{{- $_ := set $c "cluster-pool-ipv4-cidr" (first $v.ipam.operator.clusterPoolIPv4PodCIDRList) -}}
{{- $_ := set $c "health-port" (include "glia.configValue" $v.clusterHealthPort) -}}
{{- $_ := set $c "prometheus-serve-addr" (ternary (printf ":%s" (include "glia.configValue" $v.prometheus.port)) "" $v.prometheus.enabled) -}}
{{- $_ := set $c "mtu" (include "glia.configValue" $v.MTU) -}}
{{- $_ := set $c "debug" (include "glia.configValue" $v.debug.enabled) -}}
{{- range $k, $x := $v.extraConfig -}}
{{- $_ := set $c $k (include "glia.configValue" $x) -}}
{{- end -}}
{{- $lines := list -}}
{{- range $k := keys $c | sortAlpha -}}
{{- $lines = append $lines (printf "%s: %s" $k (get $c $k | quote)) -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end }}
