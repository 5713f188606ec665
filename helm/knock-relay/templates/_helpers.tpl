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
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The Secret holding the credentials: the existing one, or the chart's.
*/}}
{{- define "knock-relay.secretName" -}}
{{- default (include "knock-relay.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
The Secret one tier reads (list . "web"|"worker"): with secrets.mountAsFiles and the chart's own
Secrets, each tier has a Secret holding only the keys it uses.
*/}}
{{- define "knock-relay.tierSecretName" -}}
{{- $root := index . 0 }}{{- $tier := index . 1 }}
{{- if and (eq $tier "worker") $root.Values.secrets.existingWorkerSecret }}
{{- $root.Values.secrets.existingWorkerSecret }}
{{- else if $root.Values.secrets.existingSecret }}
{{- $root.Values.secrets.existingSecret }}
{{- else if $root.Values.secrets.mountAsFiles }}
{{- include "knock-relay.componentName" (list $root $tier) }}
{{- else }}
{{- include "knock-relay.fullname" $root }}
{{- end }}
{{- end }}

{{/*
Where a tier's Secret is mounted when secrets.mountAsFiles is on (RELAY_SECRETS_DIR).
*/}}
{{- define "knock-relay.secretsDir" -}}/var/run/secrets/knock-relay{{- end }}

{{/*
The pod-level settings both tiers share: priority class and spreading over nodes and zones
(list . "web"|"worker").
*/}}
{{- define "knock-relay.podPlacement" -}}
{{- $root := index . 0 }}{{- $tier := index . 1 }}{{- $values := index $root.Values $tier }}
{{- with $root.Values.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- if or $root.Values.topologySpread.enabled $values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- if $root.Values.topologySpread.enabled }}
  {{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  - maxSkew: 1
    topologyKey: {{ $key }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "knock-relay.componentSelectorLabels" (list $root $tier) | nindent 8 }}
  {{- end }}
  {{- end }}
  {{- with $values.topologySpreadConstraints }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
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
{{- $root := index . 0 }}{{- $tier := index . 1 }}
- configMapRef:
    name: {{ include "knock-relay.fullname" $root }}
{{- if not $root.Values.secrets.mountAsFiles }}
- secretRef:
    name: {{ include "knock-relay.tierSecretName" (list $root $tier) }}
{{- end }}
{{- end }}

{{/*
With secrets.mountAsFiles: the tier's Secret as files (one per key) and RELAY_SECRETS_DIR naming them.
*/}}
{{- define "knock-relay.secretEnv" -}}
{{- if .Values.secrets.mountAsFiles }}
- name: RELAY_SECRETS_DIR
  value: {{ include "knock-relay.secretsDir" . | quote }}
{{- end }}
{{- end }}

{{- define "knock-relay.secretMount" -}}
{{- if .Values.secrets.mountAsFiles }}
- name: secrets
  mountPath: {{ include "knock-relay.secretsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "knock-relay.secretVolume" -}}
{{- $root := index . 0 }}{{- $tier := index . 1 }}
{{- if $root.Values.secrets.mountAsFiles }}
- name: secrets
  secret:
    secretName: {{ include "knock-relay.tierSecretName" (list $root $tier) }}
    defaultMode: 0440
{{- end }}
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
