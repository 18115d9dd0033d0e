{{/*
Names and labels shared by every template. Object names are fixed by the BYOC architecture
(data-plane-agent, agent-config, agent-credentials, agent-service, agent-logs); one release per
namespace.
*/}}

{{- define "agent-marketplace.namespace" -}}
{{- .Values.namespace | default .Release.Namespace -}}
{{- end -}}

{{- define "agent-marketplace.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A label value: at most 63 characters from [A-Za-z0-9._-], alphanumeric at both ends. */}}
{{- define "agent-marketplace.labelValue" -}}
{{- regexReplaceAll "[^A-Za-z0-9._-]" (toString .) "_" | trunc 63 | trimAll "._-" -}}
{{- end -}}

{{- define "agent-marketplace.selectorLabels" -}}
app.kubernetes.io/name: data-plane-agent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agent-marketplace.labels" -}}
{{ include "agent-marketplace.selectorLabels" . }}
app.kubernetes.io/component: data-plane
app.kubernetes.io/part-of: agent-marketplace
app.kubernetes.io/version: {{ include "agent-marketplace.labelValue" (.Values.agent.version | default .Chart.AppVersion) | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "agent-marketplace.chart" . }}
{{- with .Values.deployment.id }}
marketplace.aicloudconsult.com/deployment-id: {{ include "agent-marketplace.labelValue" . | quote }}
{{- end }}
{{- with .Values.agent.name }}
marketplace.aicloudconsult.com/agent: {{ include "agent-marketplace.labelValue" . | quote }}
{{- end }}
{{- end -}}

{{- define "agent-marketplace.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "agent-marketplace.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default "data-plane-agent" -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the data-plane API key: chart-made only when a key was given explicitly. */}}
{{- define "agent-marketplace.credentialsSecretName" -}}
{{- if .Values.credentials.apiKey -}}
agent-credentials
{{- else -}}
{{- required "credentials.existingSecret (a Secret holding the data-plane API key) or credentials.apiKey is required" .Values.credentials.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "agent-marketplace.storageClassName" -}}
{{- if .Values.persistence.storageClass.create -}}
{{- required "persistence.storageClass.name is required when the chart creates the StorageClass" .Values.persistence.storageClass.name -}}
{{- else -}}
{{- .Values.persistence.storageClassName -}}
{{- end -}}
{{- end -}}

{{/* The restricted pod security profile, shared by the agent and the log retention job. */}}
{{- define "agent-marketplace.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "agent-marketplace.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}
