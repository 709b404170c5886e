{{- define "dispute-service.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dispute-service.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dispute-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dispute-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dispute-service.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "dispute-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "dispute-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dispute-service.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding DATABASE_URL (and the HS256 secret). */}}
{{- define "dispute-service.secretName" -}}
{{- default (include "dispute-service.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* The Secret holding jwks.json, when a JWKS is used. */}}
{{- define "dispute-service.jwksSecretName" -}}
{{- default (printf "%s-jwks" (include "dispute-service.fullname" .)) .Values.auth.jwksSecret -}}
{{- end -}}

{{- define "dispute-service.usesJwks" -}}
{{- if or .Values.auth.jwks .Values.auth.jwksSecret -}}true{{- end -}}
{{- end -}}

{{/* Pod and container security settings shared by the service, the migration Job and the test pod. */}}
{{- define "dispute-service.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "dispute-service.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "dispute-service.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end -}}
