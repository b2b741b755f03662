{{/*
One demo service: a Deployment labelled for the example RemediationPolicy
(sre.space/protected: "true") and its Service. Called with
(dict "root" $ "name" "policy-service" "service" .Values.policyService).
*/}}
{{- define "demo-services.service" -}}
{{- $root := .root }}
{{- $svc := .service }}
{{- if $svc.enabled }}
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
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        app: {{ .name }}
        sre.space/protected: "true"
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: 65534
        runAsGroup: 65534
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: app
          image: "{{ $root.Values.image.repository }}:{{ $root.Values.image.tag }}"
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command:
            - sh
            - -c
            - |
              port=8080
              for arg in "$@"; do
                case "$arg" in
                  --port=*) port="${arg#--port=}" ;;
                  *) echo "$0: unknown argument $arg" >&2; exit 1 ;;
                esac
              done
              echo "$0 is up" > /www/index.html
              exec httpd -f -p "$port" -h /www
            - {{ .name }}
          args: ["--port=8080"]
          ports:
            - name: http
              containerPort: 8080
          readinessProbe:
            httpGet:
              path: /
              port: http
          resources:
            {{- toYaml $svc.resources | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: [ALL]
          volumeMounts:
            - name: www
              mountPath: /www
      volumes:
        - name: www
          emptyDir:
            sizeLimit: 1Mi
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
