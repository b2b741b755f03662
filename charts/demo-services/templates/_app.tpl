{{/*
One service of the demo business (demo-apps/, images sre.space/<name>:<tag>
built by e2e/cluster/demo-images.sh), rendered when apps.enabled is true.
Called with (dict "root" $ "name" "policy-service" "service" .Values.policyService
"kafka" true "env" (list ...)). Peers are reached by Service DNS name, or on
127.0.0.1 when apps.hostNetwork is on (the local harness's real node, where
the pods share the host's network with Kafka and Jaeger).
*/}}
{{- define "demo-services.port" -}}
{{- $apps := .root.Values.apps -}}
{{- get $apps.ports .name -}}
{{- end }}

{{- define "demo-services.url" -}}
{{- $apps := .root.Values.apps -}}
{{- if $apps.hostNetwork -}}
http://127.0.0.1:{{ include "demo-services.port" . }}
{{- else -}}
http://{{ .name }}.{{ .root.Release.Namespace }}.svc
{{- end -}}
{{- end }}

{{- define "demo-services.app" -}}
{{- $root := .root }}
{{- $apps := $root.Values.apps }}
{{- $svc := .service }}
{{- $port := include "demo-services.port" (dict "root" $root "name" .name) }}
{{- if $svc.enabled }}
{{- if and $apps.hostNetwork (gt (int $svc.replicas) 1) }}
{{- fail (printf "%s: with apps.hostNetwork each service runs one replica (its port is the node's); got replicas %v" .name $svc.replicas) }}
{{- end }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    app: {{ .name }}
    app.kubernetes.io/part-of: sre-space-demo
    app.kubernetes.io/managed-by: {{ $root.Release.Service }}
    helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version }}
spec:
  replicas: {{ $svc.replicas }}
  selector:
    matchLabels:
      app: {{ .name }}
  strategy:
    rollingUpdate:
      {{- if $apps.hostNetwork }}
      # Two pods cannot hold the same host port: the old one goes first.
      maxUnavailable: 1
      maxSurge: 0
      {{- else }}
      maxUnavailable: 0
      maxSurge: 1
      {{- end }}
  template:
    metadata:
      labels:
        app: {{ .name }}
        sre.space/protected: "true"
      # The conventional scrape annotations: request counts, errors (5xx)
      # and latencies at /metrics (docs/prometheus.md).
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $port | quote }}
        prometheus.io/path: /metrics
    spec:
      {{- if $apps.hostNetwork }}
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      {{- end }}
      {{- with $apps.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $apps.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      terminationGracePeriodSeconds: 10
      securityContext:
        runAsNonRoot: true
        runAsUser: 65534
        runAsGroup: 65534
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: app
          image: "{{ $apps.image.registry }}/{{ .name }}:{{ $apps.image.tag }}"
          imagePullPolicy: {{ $apps.image.pullPolicy }}
          env:
            - name: PORT
              value: {{ $port | quote }}
            - name: OTEL_SERVICE_NAME
              value: {{ printf "%s%s" .name $apps.serviceNameSuffix | quote }}
            {{- with $apps.otlpEndpoint }}
            - name: OTEL_EXPORTER_OTLP_ENDPOINT
              value: {{ . | quote }}
            {{- end }}
            {{- if .kafka }}
            - name: KAFKA_BOOTSTRAP
              value: {{ $apps.kafkaBootstrap | quote }}
            - name: QUOTE_TOPIC
              value: {{ $apps.topics.quote | quote }}
            - name: PURCHASE_TOPIC
              value: {{ $apps.topics.purchase | quote }}
            - name: USER_TOPIC
              value: {{ $apps.topics.user | default "eligibility_checked" | quote }}
            {{- end }}
            {{- if $apps.chaosToken }}
            - name: CHAOS_TOKEN
              valueFrom:
                secretKeyRef:
                  name: demo-chaos-token
                  key: token
            {{- end }}
            {{- range .env }}
            - {{ toJson . }}
            {{- end }}
          ports:
            - name: http
              containerPort: {{ $port }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 2
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 5
            failureThreshold: 3
          resources:
            {{- toYaml $svc.resources | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: [ALL]
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    app: {{ .name }}
    app.kubernetes.io/part-of: sre-space-demo
spec:
  selector:
    app: {{ .name }}
  ports:
    - name: http
      port: 80
      targetPort: http
{{- end }}
{{- end }}
