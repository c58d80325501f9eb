{{/* The release's name for every object, and the labels that tie the pods to the Services. */}}
{{- define "edge-deploy-triton.name" -}}
{{- printf "%s-triton" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edge-deploy-triton.selector" -}}
app.kubernetes.io/name: edge-deploy-triton
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "edge-deploy-triton.labels" -}}
{{ include "edge-deploy-triton.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
