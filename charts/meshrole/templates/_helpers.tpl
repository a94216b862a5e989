{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "meshrole.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated to 63 characters. If the release name already contains the
chart name it is used as is.
*/}}
{{- define "meshrole.fullname" -}}
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
{{- define "meshrole.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "meshrole.labels" -}}
helm.sh/chart: {{ include "meshrole.chart" . }}
{{ include "meshrole.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: webhook
app.kubernetes.io/part-of: meshrole
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels (immutable on the Deployment: keep them minimal).
*/}}
{{- define "meshrole.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshrole.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "meshrole.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meshrole.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference.
*/}}
{{- define "meshrole.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Name of the Secret holding the serving certificate (tls.crt, tls.key, ca.crt) that the pods mount.
The two TLS modes use different Secrets: cert-manager keeps writing (and, after an uninstall,
keeps) the one its Certificate names, so a Secret Helm generates must never have that name, or
switching modes (helm upgrade --set certManager.enabled=false) and reinstalling without
cert-manager fail on a Secret Helm does not own, or race with cert-manager's issuing controller.
*/}}
{{- define "meshrole.tlsSecretName" -}}
{{- if .Values.certManager.enabled }}
{{- include "meshrole.certManagerTLSSecretName" . }}
{{- else }}
{{- include "meshrole.generatedTLSSecretName" . }}
{{- end }}
{{- end }}
{{- define "meshrole.certManagerTLSSecretName" -}}
{{- printf "%s-tls" (include "meshrole.fullname" .) }}
{{- end }}
{{- define "meshrole.generatedTLSSecretName" -}}
{{- printf "%s-generated-tls" (include "meshrole.fullname" .) }}
{{- end }}

{{/*
cert-manager object names.
*/}}
{{- define "meshrole.selfSignedIssuerName" -}}
{{- printf "%s-selfsigned" (include "meshrole.fullname" .) }}
{{- end }}
{{- define "meshrole.caName" -}}
{{- printf "%s-ca" (include "meshrole.fullname" .) }}
{{- end }}
{{- define "meshrole.servingCertName" -}}
{{- printf "%s-serving" (include "meshrole.fullname" .) }}
{{- end }}

{{/*
DNS names the serving certificate must cover (the Service, as the API server and in-cluster
clients may address it).
*/}}
{{- define "meshrole.dnsNames" -}}
{{- $svc := include "meshrole.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/*
Fail unless the webhook configuration name sorts (byte-wise, as the API server's ByName sort
does) strictly before "istio-", so that meshrole is called before Istio's injector.
Object names are DNS subdomains: [a-z0-9.-], starting with [a-z0-9]. "<" "istio-" means:
  first char in [0-9a-h]                       (anything below 'i'), or
  "i"    then end, or a char below 's': [-.0-9a-r]
  "is"   then end, or a char below 't': [-.0-9a-s]
  "ist"  then end, or a char below 'i': [-.0-9a-h]
  "isti" then end, or a char below 'o': [-.0-9a-n]
  "istio" then end ("istio" is a proper prefix of "istio-"; no name character sorts below '-').
*/}}
{{- define "meshrole.validateWebhookName" -}}
{{- $name := .Values.webhook.name -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" $name) -}}
{{- fail (printf "webhook.name %q is not a valid Kubernetes object name (DNS subdomain: lowercase alphanumerics, '-' and '.')" $name) -}}
{{- end -}}
{{- if gt (len $name) 253 -}}
{{- fail (printf "webhook.name %q is longer than 253 characters" $name) -}}
{{- end -}}
{{- if not (regexMatch "^([0-9a-h]|i$|i[-.0-9a-r]|is$|is[-.0-9a-s]|ist$|ist[-.0-9a-h]|isti$|isti[-.0-9a-n]|istio$)" $name) -}}
{{- fail (printf "webhook.name %q does not sort before \"istio-\": the API server calls mutating webhooks in name order and meshrole must run before Istio's sidecar injector (istio-sidecar-injector*, istio-revision-tag-*). Use a name such as \"00-meshrole\"." $name) -}}
{{- end -}}
{{- end }}

{{/*
mode=native: the ClusterRole that grants the server write access to MutatingAdmissionPolicies
and bindings and owns every object the server generates (--native-owner-cluster-role). It
exists only in native mode, so deleting it -- `helm uninstall`, or `helm upgrade` back to
mode=webhook -- lets the garbage collector remove the generated objects.
*/}}
{{- define "meshrole.nativeClusterRoleName" -}}
{{- printf "%s-native" (include "meshrole.fullname" .) }}
{{- end }}
