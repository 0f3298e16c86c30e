{{/*
Names, labels and the values every template derives from, in one place.
*/}}

{{/* The roles in a fixed order: the gateway, then the processors. */}}
{{- define "chatstream.componentNames" -}}
gateway projector router mcp analytics
{{- end -}}

{{- define "chatstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "chatstream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels on everything the chart renders. */}}
{{- define "chatstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "chatstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chatstream
{{- end -}}

{{/* Selector labels of one component: dict "root" $ "component" NAME. */}}
{{- define "chatstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chatstream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "chatstream.componentLabels" -}}
{{ include "chatstream.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
The image reference: dict "root" $ "tag" OPTIONAL "digest" OPTIONAL (a
gateway color's own). A digest wins over a tag; a color's own wins over
image.*.
*/}}
{{- define "chatstream.image" -}}
{{- $image := .root.Values.image -}}
{{- if .digest -}}
{{- printf "%s@%s" $image.repository .digest -}}
{{- else if .tag -}}
{{- printf "%s:%s" $image.repository .tag -}}
{{- else if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository ($image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Partitions of the event topic. */}}
{{- define "chatstream.partitions" -}}
{{- ((.Values.config.log | default dict).partitions | default 8) | int -}}
{{- end -}}

{{/* The drain in whole seconds (processing.drain_timeout_ms, default 10 s), rounded up. */}}
{{- define "chatstream.drainSeconds" -}}
{{- $ms := ((.Values.config.processing | default dict).drain_timeout_ms | default 10000) | int -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{/*
The termination grace period of a component: dict "root" $ "c" COMPONENT "name" NAME.
After SIGTERM the binary drains for drain_timeout_ms and then takes up to
5 s to commit and leave the group (src/lifecycle.rs STOP_MARGIN); the
preStop sleep comes before SIGTERM. Derived: their sum plus 10 s.
*/}}
{{- define "chatstream.terminationGrace" -}}
{{- $needed := add (.c.preStopSleepSeconds | int) (include "chatstream.drainSeconds" .root | int) 5 -}}
{{- if kindIs "invalid" .c.terminationGracePeriodSeconds -}}
{{- add $needed 10 -}}
{{- else if le (.c.terminationGracePeriodSeconds | int) $needed -}}
{{- fail (printf "components.%s.terminationGracePeriodSeconds (%d) must be longer than preStopSleepSeconds + the drain (processing.drain_timeout_ms) + 5 s = %d s, or the drain is cut short" .name (.c.terminationGracePeriodSeconds | int) $needed) -}}
{{- else -}}
{{- .c.terminationGracePeriodSeconds | int -}}
{{- end -}}
{{- end -}}

{{/* An autoscaler's maximum: processors never beyond the partition count. */}}
{{- define "chatstream.maxReplicas" -}}
{{- $max := .c.autoscaling.maxReplicas | int -}}
{{- if ne .name "gateway" -}}
{{- $max = min $max (include "chatstream.partitions" .root | int) -}}
{{- end -}}
{{- max $max (.c.autoscaling.minReplicas | int) -}}
{{- end -}}

{{/* The consumer group of a processor, as the binary names it. */}}
{{- define "chatstream.consumerGroup" -}}
{{- printf "%s%s" ((.root.Values.config.kafka | default dict).group_prefix | default "") .c.processor -}}
{{- end -}}

{{/* Whether a component reads the tenants file (src/processors.rs reads_tenants). */}}
{{- define "chatstream.readsTenants" -}}
{{- if has .name (list "gateway" "router" "mcp") -}}true{{- end -}}
{{- end -}}

{{/*
chatstream.yaml: the values' `config`, with what the pods depend on set by
the chart (listen address and ports, shared backends, file paths).
*/}}
{{- define "chatstream.configYaml" -}}
{{- $fixed := dict
  "environment" .Values.environment
  "data_dir" "/tmp/chatstream-data"
  "tenants_file" "/etc/chatstream/tenants/tenants.yaml"
  "server" (dict "host" "0.0.0.0" "http_port" 8000 "grpc_port" 50051)
  "log" (dict "backend" "kafka")
  "store" (dict "backend" "scylla")
-}}
{{- toYaml (mergeOverwrite (deepCopy .Values.config) $fixed) -}}
{{- end -}}

{{/* Environment every role gets. dict "root" $ "c" COMPONENT "name" NAME. */}}
{{- define "chatstream.env" -}}
- name: CHATSTREAM_CONFIG
  value: /etc/chatstream/chatstream.yaml
- name: HOME
  value: /tmp
{{- if .root.Values.secrets.redisUrl.name }}
- name: CHATSTREAM_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.secrets.redisUrl.name }}
      key: {{ .root.Values.secrets.redisUrl.key }}
{{- end }}
{{- if .root.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .root.Values.otel.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .root.Values.otel.protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: chatstream-{{ .name }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_RESOURCE_ATTRIBUTES
  value: "deployment.environment.name={{ .root.Values.environment }},k8s.namespace.name={{ .root.Release.Namespace }},k8s.pod.name=$(POD_NAME)"
{{- end }}
{{- if eq .name "router" }}
{{- range .root.Values.secrets.env }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .secretKey }}
{{- end }}
{{- end }}
{{- with .c.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The Deployments of a component as a JSON list of {suffix, color, tag,
digest}: one,
or with blueGreen.enabled one gateway Deployment per enabled color.
dict "root" $ "name" NAME.
*/}}
{{- define "chatstream.variants" -}}
{{- $variants := list (dict "suffix" "" "color" "" "tag" "" "digest" "") -}}
{{- if and (eq .name "gateway") .root.Values.blueGreen.enabled -}}
{{- $variants = list -}}
{{- range $color := list "blue" "green" -}}
{{- $cc := index $.root.Values.blueGreen.colors $color -}}
{{- if $cc.enabled -}}
{{- $variants = append $variants (dict "suffix" (printf "-%s" $color) "color" $color "tag" ($cc.tag | default "") "digest" ($cc.digest | default "")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $variants -}}
{{- end -}}

{{/* ingress-nginx annotations shared by the HTTP ingresses. */}}
{{- define "chatstream.ingressAnnotations" -}}
{{- $in := .Values.ingress -}}
nginx.ingress.kubernetes.io/ssl-redirect: {{ $in.tls.enabled | quote }}
nginx.ingress.kubernetes.io/force-ssl-redirect: {{ $in.tls.enabled | quote }}
nginx.ingress.kubernetes.io/limit-rps: {{ $in.rateLimit.rps | quote }}
nginx.ingress.kubernetes.io/limit-burst-multiplier: {{ $in.rateLimit.burstMultiplier | quote }}
nginx.ingress.kubernetes.io/limit-connections: {{ $in.rateLimit.connections | quote }}
nginx.ingress.kubernetes.io/proxy-body-size: {{ $in.bodySize | quote }}
nginx.ingress.kubernetes.io/proxy-connect-timeout: {{ $in.timeouts.connectSeconds | quote }}
nginx.ingress.kubernetes.io/proxy-read-timeout: {{ $in.timeouts.readSeconds | quote }}
nginx.ingress.kubernetes.io/proxy-send-timeout: {{ $in.timeouts.sendSeconds | quote }}
# Streamed completions (SSE) must reach the client token by token.
nginx.ingress.kubernetes.io/proxy-buffering: "off"
{{- if $in.cors.enabled }}
nginx.ingress.kubernetes.io/enable-cors: "true"
nginx.ingress.kubernetes.io/cors-allow-origin: {{ $in.cors.allowOrigin | quote }}
nginx.ingress.kubernetes.io/cors-allow-methods: {{ $in.cors.allowMethods | quote }}
nginx.ingress.kubernetes.io/cors-allow-headers: {{ $in.cors.allowHeaders | quote }}
nginx.ingress.kubernetes.io/cors-allow-credentials: {{ $in.cors.allowCredentials | quote }}
{{- end }}
{{- with $in.annotations }}
{{ toYaml . }}
{{- end }}
{{- end }}
