{{/* The chart's name, or nameOverride. */}}
{{- define "sre-space.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of the release's objects. Cluster-scoped objects (the ClusterRole and
its binding) carry it too, so two releases need two release names.
*/}}
{{- define "sre-space.fullname" -}}
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

{{- define "sre-space.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sre-space.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sre-space.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sre-space.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sre-space
{{- end }}

{{- define "sre-space.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sre-space.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sre-space.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The dashboard's listen address, host:port (an IPv6 address in brackets). */}}
{{- define "sre-space.dashboardAddress" -}}
{{- $a := .Values.dashboard.address -}}
{{- if contains ":" $a -}}
[{{ $a }}]:{{ .Values.dashboard.port | int }}
{{- else -}}
{{ $a }}:{{ .Values.dashboard.port | int }}
{{- end -}}
{{- end }}

{{/*
The Lease the replicas elect their leader on: the full name, so two releases
(even in one namespace) never share one.
*/}}
{{- define "sre-space.leaseName" -}}
{{ include "sre-space.fullname" . }}
{{- end }}

{{/* A map as key=value,key=value in key order (OTEL_RESOURCE_ATTRIBUTES). */}}
{{- define "sre-space.keyValues" -}}
{{- $pairs := list -}}
{{- range $k, $v := . -}}
{{- $pairs = append $pairs (printf "%s=%v" $k $v) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end }}

{{/* The labels a PrometheusRule's expressions select this release's series by. */}}
{{- define "sre-space.seriesSelector" -}}
job="{{ include "sre-space.fullname" . }}-metrics", namespace="{{ .Release.Namespace }}"
{{- end }}
