{{/*
Chart name, at most 63 characters (the length limit of a Kubernetes name).
*/}}
{{- define "coap-edge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: the release name, with the chart name appended
unless the release name already contains it.
*/}}
{{- define "coap-edge.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "coap-edge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels the Services, the PodDisruptionBudget and the spread rules select pods by.
*/}}
{{- define "coap-edge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coap-edge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "coap-edge.labels" -}}
helm.sh/chart: {{ include "coap-edge.chart" . }}
{{ include "coap-edge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coap-edge
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "coap-edge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "coap-edge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest when a digest is given, repository:tag otherwise
(the tag defaults to the chart's appVersion).
*/}}
{{- define "coap-edge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
config.drainTimeoutSeconds, or its former name drainTimeout when the values still use it (it
wins over the chart's default), or coap-edge's default (20 s) when the config sets neither.
*/}}
{{- define "coap-edge.drainTimeout" -}}
{{- if hasKey .Values.config "drainTimeout" }}
{{- .Values.config.drainTimeout | int }}
{{- else if hasKey .Values.config "drainTimeoutSeconds" }}
{{- .Values.config.drainTimeoutSeconds | int }}
{{- else }}
{{- 20 }}
{{- end }}
{{- end }}

{{/*
config as coap-edge reads it: values that still set drainTimeout (the former name) get it
without the chart's default drainTimeoutSeconds, since coap-edge refuses both names at once.
*/}}
{{- define "coap-edge.config" -}}
{{- if hasKey .Values.config "drainTimeout" }}
{{- toYaml (omit .Values.config "drainTimeoutSeconds") }}
{{- else }}
{{- toYaml .Values.config }}
{{- end }}
{{- end }}

{{/*
V8 heap size in MiB: nodeOptions.heapPercent of resources.limits.memory. Empty when no
memory limit is set or it is not written with Mi, Gi, M, G or in bytes.
*/}}
{{- define "coap-edge.maxOldSpaceSize" -}}
{{- $mem := dig "limits" "memory" "" .Values.resources | toString }}
{{- $mib := 0 }}
{{- if regexMatch "^[0-9]+Gi$" $mem }}
{{- $mib = mul (trimSuffix "Gi" $mem | atoi) 1024 }}
{{- else if regexMatch "^[0-9]+Mi$" $mem }}
{{- $mib = trimSuffix "Mi" $mem | atoi }}
{{- else if regexMatch "^[0-9]+G$" $mem }}
{{- $mib = div (mul (trimSuffix "G" $mem | atoi) 1000000000) 1048576 }}
{{- else if regexMatch "^[0-9]+M$" $mem }}
{{- $mib = div (mul (trimSuffix "M" $mem | atoi) 1000000) 1048576 }}
{{- else if regexMatch "^[0-9]+$" $mem }}
{{- $mib = div ($mem | atoi) 1048576 }}
{{- end }}
{{- if gt (int $mib) 0 }}
{{- div (mul $mib (.Values.nodeOptions.heapPercent | int)) 100 }}
{{- end }}
{{- end }}

{{/*
Checks that JSON Schema cannot express (it compares no two values); rendering fails with
a message when one does not hold. Included by the Deployment.
*/}}
{{- define "coap-edge.validateValues" -}}
{{- $drain := include "coap-edge.drainTimeout" . | int }}
{{- $grace := .Values.terminationGracePeriodSeconds | int }}
{{- $preStop := .Values.preStopSleepSeconds | int }}
{{- if le $grace (add $drain $preStop | int) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than config.drainTimeoutSeconds (%d) plus preStopSleepSeconds (%d): the kubelet kills the container when the grace period ends, cutting the drain short" $grace $drain $preStop) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int)) }}
{{- fail (printf "autoscaling.minReplicas (%d) must not be greater than autoscaling.maxReplicas (%d)" (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int)) }}
{{- end }}
{{- $httpBind := dig "httpBind" "0.0.0.0" .Values.config | toString }}
{{- if or (hasPrefix "127." $httpBind) (eq $httpBind "::1") (eq $httpBind "localhost") }}
{{- fail (printf "config.httpBind (%s) is a loopback address: the kubelet's probes and Prometheus reach the pod IP, so the pod would never become ready; keep 0.0.0.0 and restrict access with networkPolicy" $httpBind) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not (dig "requests" "cpu" "" .Values.resources)) }}
{{- fail "autoscaling.enabled needs resources.requests.cpu: CPU utilization is measured against the request" }}
{{- end }}
{{- end }}

{{/*
One environment variable read from secrets.existingSecret, when its key is not empty.
Arguments: dict "root" $ "env" NAME "key" KEY.
*/}}
{{- define "coap-edge.secretEnv" -}}
{{- if .key -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.secrets.existingSecret | quote }}
      key: {{ .key | quote }}
      optional: {{ .root.Values.secrets.optional }}
{{- end }}
{{- end }}
