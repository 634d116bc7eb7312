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

{{/* A Redis URL as an env value: from a Secret when existingSecret is set. Input: dict root, env, and redis (a {url, existingSecret, secretKey}; default .Values.redis, the cache's). */}}
{{- define "tollgate.redisEnv" -}}
{{- $r := .redis | default .root.Values.redis -}}
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
  value: /etc/tollgate/policy/
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
# /metrics is served here, not on the public API port.
- name: TOLLGATE_ORCHESTRATOR_METRICS_PORT
  value: {{ $p.metrics | quote }}
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
{{- /* Budget counters: their own Redis, never the cache's (H-6). */}}
{{- include "tollgate.redisEnv" (dict "root" $root "redis" $root.Values.budgets.redis "env" "TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL") }}
{{- include "tollgate.redisEnv" (dict "root" $root "redis" $root.Values.responses.redis "env" "TOLLGATE_ORCHESTRATOR_RESPONSES_REDIS_URL") }}
- name: TOLLGATE_ORCHESTRATOR_RESPONSES_TTL_SECONDS
  value: {{ $root.Values.responses.ttlSeconds | int64 | quote }}
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

{{/*
A probe action: native gRPC on a named port, or an HTTP GET. Input: dict root, svc, kind
(liveness|readiness). The kubelet's gRPC probe speaks plaintext only, so with grpc.tls on a
gRPC port is probed with a TCP connect instead.
*/}}
{{- define "tollgate.probeAction" -}}
{{- if and .svc.probes.grpc .root.Values.grpc.tls.enabled -}}
tcpSocket:
  port: {{ index .svc.ports .svc.probes.grpc }}
{{- else if .svc.probes.grpc -}}
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

{{/*
gRPC control-plane identity (docs/security.md). Servers: router, cache, orchestrator.
Callers: orchestrator (Route, Lookup, Store, ...) and operator (UpdatePolicy, UpdateBudgets).
*/}}
{{- define "tollgate.grpcCallerNames" -}}orchestrator operator{{- end }}

{{- define "tollgate.isGrpcServer" -}}
{{- if has .name (list "router" "cache" "orchestrator") }}true{{ end }}
{{- end }}

{{- define "tollgate.isGrpcClient" -}}
{{- if has .name (list "orchestrator" "operator") }}true{{ end }}
{{- end }}

{{- define "tollgate.grpcTokensSecret" -}}
{{- .Values.grpc.tokens.existingSecret | default (printf "%s-grpc-tokens" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}

{{- define "tollgate.grpcCallersSecret" -}}
{{- .Values.grpc.callers.existingSecret | default (printf "%s-grpc-callers" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}

{{/* The Secret with tls.crt, tls.key and ca.crt of one component. Input: dict root, name. */}}
{{- define "tollgate.grpcTlsSecret" -}}
{{- $tls := .root.Values.grpc.tls -}}
{{- get ($tls.componentSecrets | default dict) .name | default $tls.secretName -}}
{{- end }}

{{/*
The generated caller tokens as JSON ({"orchestrator": ..., "operator": ...}): the live
Secret's values when it exists (lookup, so `helm upgrade` keeps them), else new random
ones. Computed once per render and kept in .Values.grpc, so the tokens Secret, the
callers' digests and the pods' checksum annotations agree. `helm template` cannot look
up, so there every render makes new tokens (use grpc.tokens.existingSecret there).
*/}}
{{- define "tollgate.grpcTokens" -}}
{{- $g := .Values.grpc -}}
{{- if not (hasKey $g "_generatedTokens") -}}
{{- $live := lookup "v1" "Secret" .Release.Namespace (include "tollgate.grpcTokensSecret" .) | default dict -}}
{{- $data := get $live "data" | default dict -}}
{{- $tokens := dict -}}
{{- range $caller := splitList " " (include "tollgate.grpcCallerNames" .) -}}
{{- $old := get $data $caller | default "" | b64dec -}}
{{- $_ := set $tokens $caller (empty $old | ternary (randAlphaNum 48) $old) -}}
{{- end -}}
{{- $_ := set $g "_generatedTokens" $tokens -}}
{{- end -}}
{{- get $g "_generatedTokens" | toJson -}}
{{- end }}

{{/* callers.yaml: each caller's name and the sha256 hex of its token. */}}
{{- define "tollgate.grpcCallersFile" -}}
{{- $tokens := include "tollgate.grpcTokens" . | fromJson -}}
{{- range $caller := splitList " " (include "tollgate.grpcCallerNames" .) }}
{{ $caller }}: {{ get $tokens $caller | sha256sum }}
{{- end }}
{{- end }}

{{/* Values that do not fit together fail the render with the names of the values. */}}
{{- define "tollgate.grpcValidate" -}}
{{- $g := .Values.grpc -}}
{{- $root := . -}}
{{- if and (eq $g.auth "mtls") (not $g.tls.enabled) }}
{{- fail "grpc.auth=mtls needs grpc.tls.enabled=true and the certificates in grpc.tls" }}
{{- end }}
{{- if eq $g.auth "token" }}
{{- if and $g.tokens.existingSecret (not $g.callers.existingSecret) }}
{{- fail "grpc.tokens.existingSecret needs grpc.callers.existingSecret (callers.yaml: the sha256 of each token)" }}
{{- end }}
{{- if and $g.callers.existingSecret (not $g.tokens.existingSecret) }}
{{- fail "grpc.callers.existingSecret needs grpc.tokens.existingSecret (the tokens it lists)" }}
{{- end }}
{{- end }}
{{- if $g.tls.enabled }}
{{- range $name, $svc := .Values.services }}
{{- $ctx := dict "root" $root "name" $name }}
{{- if and $svc.enabled (or (include "tollgate.isGrpcServer" $ctx) (include "tollgate.isGrpcClient" $ctx)) (not (include "tollgate.grpcTlsSecret" $ctx)) }}
{{- fail (printf "grpc.tls.enabled needs grpc.tls.secretName or grpc.tls.componentSecrets.%s" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq $g.auth "mtls" }}
{{- $cs := $g.tls.componentSecrets | default dict }}
{{- if or (not (get $cs "orchestrator")) (not (get $cs "operator")) (eq (get $cs "orchestrator") (get $cs "operator")) }}
{{- fail "grpc.auth=mtls needs distinct grpc.tls.componentSecrets.orchestrator and .operator: a caller's identity is its certificate's CN" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The gRPC auth and TLS env of one component. Input: dict root, name. */}}
{{- define "tollgate.env.grpc" -}}
{{- $g := .root.Values.grpc -}}
{{- $p := printf "TOLLGATE_%s_" (upper .name) -}}
{{- $mtls := eq $g.auth "mtls" -}}
{{- if include "tollgate.isGrpcServer" . }}
{{- if not $mtls }}
- name: {{ $p }}GRPC_CALLERS_FILE
  value: /etc/tollgate/grpc-callers/callers.yaml
{{- end }}
{{- if $g.tls.enabled }}
- name: {{ $p }}GRPC_TLS_CERT
  value: /etc/tollgate/grpc-tls/tls.crt
- name: {{ $p }}GRPC_TLS_KEY
  value: /etc/tollgate/grpc-tls/tls.key
{{- if $mtls }}
- name: {{ $p }}GRPC_TLS_CLIENT_CA
  value: /etc/tollgate/grpc-tls/ca.crt
{{- end }}
{{- end }}
{{- end }}
{{- if include "tollgate.isGrpcClient" . }}
{{- if not $mtls }}
- name: {{ $p }}GRPC_TOKEN_FILE
  value: /etc/tollgate/grpc-token/token
{{- end }}
{{- if $g.tls.enabled }}
- name: {{ $p }}PEER_TLS_CA
  value: /etc/tollgate/grpc-tls/ca.crt
{{- if $mtls }}
- name: {{ $p }}PEER_TLS_CERT
  value: /etc/tollgate/grpc-tls/tls.crt
- name: {{ $p }}PEER_TLS_KEY
  value: /etc/tollgate/grpc-tls/tls.key
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The gRPC auth and TLS volume mounts of one component. Input: dict root, name. */}}
{{- define "tollgate.grpcVolumeMounts" -}}
{{- $g := .root.Values.grpc -}}
{{- $mtls := eq $g.auth "mtls" -}}
{{- if and (not $mtls) (include "tollgate.isGrpcServer" .) }}
- name: grpc-callers
  mountPath: /etc/tollgate/grpc-callers
  readOnly: true
{{- end }}
{{- if and (not $mtls) (include "tollgate.isGrpcClient" .) }}
- name: grpc-token
  mountPath: /etc/tollgate/grpc-token
  readOnly: true
{{- end }}
{{- if and $g.tls.enabled (or (include "tollgate.isGrpcServer" .) (include "tollgate.isGrpcClient" .)) }}
- name: grpc-tls
  mountPath: /etc/tollgate/grpc-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* The matching volumes: the callers' digests, only this caller's own token, its certificate. */}}
{{- define "tollgate.grpcVolumes" -}}
{{- $g := .root.Values.grpc -}}
{{- $mtls := eq $g.auth "mtls" -}}
{{- if and (not $mtls) (include "tollgate.isGrpcServer" .) }}
- name: grpc-callers
  secret:
    secretName: {{ include "tollgate.grpcCallersSecret" .root }}
    defaultMode: 0440
    items:
      - key: callers.yaml
        path: callers.yaml
{{- end }}
{{- if and (not $mtls) (include "tollgate.isGrpcClient" .) }}
- name: grpc-token
  secret:
    secretName: {{ include "tollgate.grpcTokensSecret" .root }}
    defaultMode: 0440
    items:
      - key: {{ .name }}
        path: token
{{- end }}
{{- if and $g.tls.enabled (or (include "tollgate.isGrpcServer" .) (include "tollgate.isGrpcClient" .)) }}
{{- $mtls := eq $g.auth "mtls" }}
- name: grpc-tls
  secret:
    secretName: {{ include "tollgate.grpcTlsSecret" . }}
    defaultMode: 0440
    items:
      {{- if or $mtls (include "tollgate.isGrpcServer" .) }}
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      {{- end }}
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}

{{/*
Budget counters (docs/reliability.md, docs/security.md H-6, M-2): in budgets.redis, a Redis
of their own with maxmemory-policy noeviction, or else in each orchestrator's memory.
*/}}
{{- define "tollgate.budgetRedisConfigured" -}}
{{- if or .Values.budgets.redis.existingSecret .Values.budgets.redis.url }}true{{- end }}
{{- end }}

{{/* "redis" or "per-replica": where the orchestrators keep budget counters. */}}
{{- define "tollgate.budgetStore" -}}
{{- if include "tollgate.budgetRedisConfigured" . }}redis{{ else }}per-replica{{ end }}
{{- end }}

{{/* The most orchestrator pods that can run at once: replicas, or the HPA's maximum. */}}
{{- define "tollgate.orchestratorMaxReplicas" -}}
{{- $o := .Values.services.orchestrator -}}
{{- $hpa := $o.autoscaling | default dict -}}
{{- if $hpa.enabled }}{{ max (int $o.replicas) (int $hpa.maxReplicas) }}{{ else }}{{ int $o.replicas }}{{ end }}
{{- end }}

{{/* Budgets the chart itself configures: config.orchestrator.budgets or the env var. */}}
{{- define "tollgate.budgetsConfigured" -}}
{{- $cfg := get (.Values.config | default dict) "orchestrator" | default dict -}}
{{- $env := .Values.services.orchestrator.env | default dict -}}
{{- if or (get $cfg "budgets") (get $env "TOLLGATE_ORCHESTRATOR_BUDGETS") }}true{{- end }}
{{- end }}

{{/*
Budgets that cannot hold fail the render (M-2, H-6): budgets configured, more than one
orchestrator and no budget Redis (each replica would admit up to the limit), unless
budgets.perReplica says that is wanted; and a budget Redis that is the cache's.
*/}}
{{- define "tollgate.budgetsValidate" -}}
{{- $b := .Values.budgets -}}
{{- $o := .Values.services.orchestrator -}}
{{- $n := int (include "tollgate.orchestratorMaxReplicas" .) -}}
{{- if and $o.enabled (include "tollgate.budgetsConfigured" .) (not (include "tollgate.budgetRedisConfigured" .)) (gt $n 1) (not $b.perReplica) }}
{{- fail (printf "budgets are configured with up to %d orchestrator replicas and no budget Redis: each replica would count alone (the limit x %d) and restarts would reset spend. Set budgets.redis.url or budgets.redis.existingSecret (a Redis of its own, maxmemory-policy noeviction), or budgets.perReplica=true to accept per-replica budgets" $n $n) }}
{{- end }}
{{- $r := .Values.redis -}}
{{- if and $b.redis.url (eq $b.redis.url $r.url) }}
{{- fail "budgets.redis.url is redis.url, the cache's Redis: cache writes would evict budget counters (H-6). Give budgets their own Redis (or at least their own database on a noeviction Redis)" }}
{{- end }}
{{- if and $b.redis.existingSecret (eq $b.redis.existingSecret $r.existingSecret) (eq $b.redis.secretKey $r.secretKey) }}
{{- fail "budgets.redis.existingSecret/secretKey is the cache's Redis URL (redis.existingSecret): give budgets their own Redis" }}
{{- end }}
{{- end }}

{{/*
The key the orchestrators sign cache entries with (docs/security.md, H-2): shared by
every orchestrator replica and by nothing else. Kept across `helm upgrade` (lookup).
*/}}
{{- define "tollgate.cacheSigningSecret" -}}
{{- printf "%s-cache-signing" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.cacheSigningKey" -}}
{{- $live := lookup "v1" "Secret" .Release.Namespace (include "tollgate.cacheSigningSecret" .) | default dict -}}
{{- $old := get (get $live "data" | default dict) "key" | default "" | b64dec -}}
{{- empty $old | ternary (randAlphaNum 64) $old -}}
{{- end }}

{{- define "tollgate.env.cacheSigning" -}}
{{- if eq .name "orchestrator" }}
- name: TOLLGATE_ORCHESTRATOR_CACHE_SIGNING_KEY_FILE
  value: /etc/tollgate/cache-signing/key
{{- end }}
{{- end }}

{{- define "tollgate.cacheSigningMounts" -}}
{{- if eq .name "orchestrator" }}
- name: cache-signing
  mountPath: /etc/tollgate/cache-signing
  readOnly: true
{{- end }}
{{- end }}

{{- define "tollgate.cacheSigningVolumes" -}}
{{- if eq .name "orchestrator" }}
- name: cache-signing
  secret:
    secretName: {{ include "tollgate.cacheSigningSecret" .root }}
    defaultMode: 0440
    items:
      - key: key
        path: key
{{- end }}
{{- end }}

{{/*
OpenTelemetry tracing (values: tracing; docs/observability.md): the standard OTEL_* env
vars every service reads at start (tollgate_common/tracing.py). With tracing.enabled false
not one of them is rendered. Input: dict root, name.
*/}}
{{- define "tollgate.env.tracing" -}}
{{- $t := .root.Values.tracing -}}
{{- if $t.enabled }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "tollgate-%s" .name | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $t.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $t.protocol | quote }}
{{- with $t.headersSecret }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: headers
{{- end }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $t.samplerArg | toString | quote }}
# Defined before OTEL_RESOURCE_ATTRIBUTES, which refers to it as $(...).
- name: OTEL_RESOURCE_ATTRIBUTES_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ include "tollgate.tracingResourceAttributes" . | quote }}
- name: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT
  value: {{ $t.captureMessageContent | toString | quote }}
{{- end }}
{{- end }}

{{/* OTEL_RESOURCE_ATTRIBUTES: the pod's Kubernetes names, then tracing.resourceAttributes (which win), as k=v,k=v sorted by key. Input: dict root, name. */}}
{{- define "tollgate.tracingResourceAttributes" -}}
{{- $attrs := dict
  "k8s.namespace.name" .root.Release.Namespace
  "k8s.deployment.name" (include "tollgate.componentName" .)
  "k8s.pod.name" "$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)" -}}
{{- range $k, $v := .root.Values.tracing.resourceAttributes | default dict -}}
{{- $_ := set $attrs $k ($v | toString) -}}
{{- end -}}
{{- $pairs := list -}}
{{- range $k, $v := $attrs -}}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end }}

{{/* tracing.enabled without a place to send spans fails the render. */}}
{{- define "tollgate.tracingValidate" -}}
{{- $t := .Values.tracing -}}
{{- if and $t.enabled (not $t.endpoint) }}
{{- fail "tracing.enabled needs tracing.endpoint: the OTLP receiver's URL, e.g. http://otel-collector.observability:4317 (grpc) or :4318 (http/protobuf)" }}
{{- end }}
{{- end }}
