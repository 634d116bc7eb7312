{{/*
Names, labels and the pieces every workload shares. Templates that range over
.Values.services call these with a dict: (dict "root" $ "name" $name "svc" $svc).
*/}}

{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The object name of one component: <fullname>-<component>, at most 63 characters. */}}
{{- define "tollgate.componentName" -}}
{{- printf "%s-%s" (include "tollgate.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" . }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tollgate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component. Input: dict root, name. */}}
{{- define "tollgate.componentSelectorLabels" -}}
{{ include "tollgate.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* All labels of one component. Input: dict root, name. */}}
{{- define "tollgate.componentLabels" -}}
{{ include "tollgate.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "tollgate.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end }}

{{/* Names of the objects the components share. */}}
{{- define "tollgate.policyConfigMap" -}}
{{- printf "%s-policy" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Written by the operator from RoutingPolicy resources; the chart never creates it. */}}
{{- define "tollgate.policyOverrideConfigMap" -}}
{{- printf "%s-policy-override" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.configConfigMap" -}}
{{- printf "%s-config" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.apiKeysSecret" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}

{{- define "tollgate.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create }}
{{- include "tollgate.componentName" . }}
{{- else }}
{{- .root.Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/* host:port of a component's gRPC port inside the cluster. Input: dict root, name. */}}
{{- define "tollgate.grpcAddr" -}}
{{- $svc := index .root.Values.services .name -}}
{{- printf "%s:%v" (include "tollgate.componentName" .) $svc.ports.grpc -}}
{{- end }}

{{/* The Redis URL as an env value: from a Secret when redis.existingSecret is set. Input: dict root, env. */}}
{{- define "tollgate.redisEnv" -}}
{{- $r := .root.Values.redis -}}
{{- if $r.existingSecret }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ $r.existingSecret }}
      key: {{ $r.secretKey }}
{{- else if $r.url }}
- name: {{ .env }}
  value: {{ $r.url | quote }}
{{- end }}
{{- end }}

{{- define "tollgate.redisConfigured" -}}
{{- if or .Values.redis.existingSecret .Values.redis.url }}true{{- end }}
{{- end }}

{{/*
Env of each component. Every service binds 0.0.0.0 in the cluster (loopback is
the default for local runs) and reads the shared TOLLGATE_CONFIG file, which has
one section per service.
*/}}
{{- define "tollgate.env.common" -}}
- name: TOLLGATE_LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
- name: TOLLGATE_CONFIG
  value: /etc/tollgate/config/config.yaml
{{- end }}

{{- define "tollgate.env.router" -}}
{{- $p := .svc.ports -}}
- name: TOLLGATE_ROUTER_HOST
  value: "0.0.0.0"
- name: TOLLGATE_ROUTER_GRPC_PORT
  value: {{ $p.grpc | quote }}
- name: TOLLGATE_ROUTER_METRICS_PORT
  value: {{ $p.metrics | quote }}
- name: TOLLGATE_ROUTER_POLICY_FILE
  value: /etc/tollgate/policy/policy.yaml
- name: TOLLGATE_ROUTER_POLICY_OVERRIDE_FILE
  value: /etc/tollgate/policy-override/policy.yaml
- name: TOLLGATE_ROUTER_PRICE_TABLE_FILE
  value: /etc/tollgate/policy/prices.yaml
{{- end }}

{{- define "tollgate.env.cache" -}}
{{- $p := .svc.ports -}}
- name: TOLLGATE_CACHE_HOST
  value: "0.0.0.0"
- name: TOLLGATE_CACHE_GRPC_PORT
  value: {{ $p.grpc | quote }}
- name: TOLLGATE_CACHE_METRICS_PORT
  value: {{ $p.metrics | quote }}
- name: TOLLGATE_CACHE_BACKEND
  value: {{ .svc.backend | quote }}
- name: TOLLGATE_CACHE_MAX_BYTES
  value: {{ .svc.maxBytes | int64 | quote }}
{{- if eq .svc.backend "redis" }}
{{- include "tollgate.redisEnv" (dict "root" .root "env" "TOLLGATE_CACHE_REDIS_URL") }}
{{- end }}
{{- end }}

{{- define "tollgate.env.orchestrator" -}}
{{- $p := .svc.ports -}}
{{- $root := .root -}}
- name: TOLLGATE_ORCHESTRATOR_HOST
  value: "0.0.0.0"
- name: TOLLGATE_ORCHESTRATOR_HTTP_PORT
  value: {{ $p.http | quote }}
- name: TOLLGATE_ORCHESTRATOR_GRPC_PORT
  value: {{ $p.grpc | quote }}
- name: TOLLGATE_ORCHESTRATOR_ROUTER_ADDR
  value: {{ include "tollgate.grpcAddr" (dict "root" $root "name" "router") | quote }}
- name: TOLLGATE_ORCHESTRATOR_CACHE_ADDR
  value: {{ include "tollgate.grpcAddr" (dict "root" $root "name" "cache") | quote }}
- name: TOLLGATE_ORCHESTRATOR_POLICY_FILE
  value: /etc/tollgate/policy/policy.yaml
- name: TOLLGATE_ORCHESTRATOR_API_KEYS_FILE
  value: /etc/tollgate/api-keys/api-keys.yaml
{{- $sim := $root.Values.services.simulator }}
{{- if .svc.upstreamBaseUrl }}
- name: TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL
  value: {{ .svc.upstreamBaseUrl | quote }}
{{- else if $sim.enabled }}
- name: TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL
  value: {{ printf "http://%s:%v/v1" (include "tollgate.componentName" (dict "root" $root "name" "simulator")) $sim.ports.http | quote }}
{{- end }}
{{- include "tollgate.redisEnv" (dict "root" $root "env" "TOLLGATE_ORCHESTRATOR_REDIS_URL") }}
{{- range $env, $ref := $root.Values.providerKeys }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secretName }}
      key: {{ $ref.secretKey }}
{{- end }}
{{- end }}

{{- define "tollgate.env.simulator" -}}
- name: TOLLGATE_SIM_HOST
  value: "0.0.0.0"
- name: TOLLGATE_SIM_PORT
  value: {{ .svc.ports.http | quote }}
- name: TOLLGATE_SIM_LATENCY_SCALE
  value: {{ .svc.latencyScale | toString | quote }}
{{- end }}

{{- define "tollgate.env.operator" -}}
{{- $root := .root -}}
{{- $p := .svc.ports -}}
- name: TOLLGATE_OPERATOR_HOST
  value: "0.0.0.0"
- name: TOLLGATE_OPERATOR_HEALTH_PORT
  value: {{ $p.health | quote }}
- name: TOLLGATE_OPERATOR_METRICS_PORT
  value: {{ $p.metrics | quote }}
- name: TOLLGATE_OPERATOR_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: TOLLGATE_OPERATOR_ROUTER_SERVICE
  value: {{ include "tollgate.componentName" (dict "root" $root "name" "router") | quote }}
- name: TOLLGATE_OPERATOR_ROUTER_GRPC_PORT
  value: {{ $root.Values.services.router.ports.grpc | quote }}
- name: TOLLGATE_OPERATOR_ORCHESTRATOR_SERVICE
  value: {{ include "tollgate.componentName" (dict "root" $root "name" "orchestrator") | quote }}
- name: TOLLGATE_OPERATOR_ORCHESTRATOR_GRPC_PORT
  value: {{ $root.Values.services.orchestrator.ports.grpc | quote }}
- name: TOLLGATE_OPERATOR_POLICY_CONFIGMAP
  value: {{ include "tollgate.policyOverrideConfigMap" $root | quote }}
# The chart's own policy: pushed back to the routers at once when the RoutingPolicy goes.
- name: TOLLGATE_OPERATOR_BASE_POLICY_CONFIGMAP
  value: {{ include "tollgate.policyConfigMap" $root | quote }}
- name: TOLLGATE_OPERATOR_RULE_LABELS
  value: {{ $root.Values.prometheusRule.additionalLabels | default dict | toJson | quote }}
{{- end }}

{{/* A probe action: native gRPC on a named port, or an HTTP GET. Input: dict svc, kind (liveness|readiness). */}}
{{- define "tollgate.probeAction" -}}
{{- if .svc.probes.grpc -}}
grpc:
  port: {{ index .svc.ports .svc.probes.grpc }}
{{- else -}}
httpGet:
  path: {{ index .svc.probes.http .kind }}
  port: {{ .svc.probes.http.port }}
{{- end -}}
{{- end }}

{{/* Pod peers for a NetworkPolicy rule. Input: dict root, who (a component, "prometheus" or "api"). */}}
{{- define "tollgate.networkPeers" -}}
{{- $np := .root.Values.networkPolicy -}}
{{- if eq .who "prometheus" -}}
{{- with $np.metricsFrom }}{{ toYaml . }}{{ end -}}
{{- else if eq .who "api" -}}
{{- with $np.apiFrom }}{{ toYaml . }}{{ end -}}
{{- else -}}
- podSelector:
    matchLabels:
      {{- include "tollgate.componentSelectorLabels" (dict "root" .root "name" .who) | nindent 6 }}
{{- end -}}
{{- end }}
