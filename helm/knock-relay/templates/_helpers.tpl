{{/*
Expand the name of the chart.
*/}}
{{- define "knock-relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "knock-relay.fullname" -}}
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
The name of one component's resources: fullname, truncated so that "-worker" still fits in 63 chars.
*/}}
{{- define "knock-relay.componentName" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- printf "%s-%s" (include "knock-relay.fullname" $root | trunc (int (sub 62 (len $component)))) $component | trimSuffix "-" }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "knock-relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "knock-relay.labels" -}}
helm.sh/chart: {{ include "knock-relay.chart" . }}
{{ include "knock-relay.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: knock-relay
{{- end }}

{{/*
Selector labels
*/}}
{{- define "knock-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "knock-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels and selector labels of one component (web, worker, sandbox): (list $ "web").
*/}}
{{- define "knock-relay.componentLabels" -}}
{{ include "knock-relay.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "knock-relay.componentSelectorLabels" -}}
{{ include "knock-relay.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "knock-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "knock-relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The relay image.
*/}}
{{- define "knock-relay.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The Secret holding the credentials: the existing one, or the chart's.
*/}}
{{- define "knock-relay.secretName" -}}
{{- default (include "knock-relay.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
The in-cluster URL of the Knock sandbox.
*/}}
{{- define "knock-relay.sandboxUrl" -}}
{{- printf "http://%s:%d" (include "knock-relay.componentName" (list . "sandbox")) (int .Values.sandbox.port) }}
{{- end }}

{{/*
What every relay container shares: settings and credentials as environment, a writable /tmp.
*/}}
{{- define "knock-relay.envFrom" -}}
- configMapRef:
    name: {{ include "knock-relay.fullname" . }}
- secretRef:
    name: {{ include "knock-relay.secretName" . }}
{{- end }}

{{- define "knock-relay.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "knock-relay.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
Pod annotations that roll the pods when settings or the chart's Secret change.
*/}}
{{- define "knock-relay.checksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}
