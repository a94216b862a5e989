package main

import (
	"fmt"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"istio.io/istio/operator/pkg/render"
)

// Names of the rendered objects the injector is built from.
const (
	// webhookConfigurationName is Istio's MutatingWebhookConfiguration for
	// the default revision installed in istio-system.
	webhookConfigurationName = "istio-sidecar-injector"
	// injectorConfigMapName holds the injection template ("config") and the
	// Helm values ("values") that istiod's injector reads.
	injectorConfigMapName = "istio-sidecar-injector"
	// meshConfigMapName holds the mesh config ("mesh").
	meshConfigMapName = "istio"
)

// rendered is what the istiod chart renders for the injector.
type rendered struct {
	// InjectionConfig is the istio-sidecar-injector ConfigMap's "config"
	// key: policy, templates (sidecar, gateway, grpc-*, waypoint, ...),
	// selectors.
	InjectionConfig string
	// Values is the same ConfigMap's "values" key: the Helm values the
	// templates see as .Values.
	Values string
	// Mesh is the istio ConfigMap's "mesh" key.
	Mesh string
	// WebhookConfiguration is the chart's istio-sidecar-injector
	// configuration, as rendered (clientConfig pointing at the istiod
	// Service).
	WebhookConfiguration *admissionregistrationv1.MutatingWebhookConfiguration
}

// renderCharts renders the charts compiled into the istio.io/istio module with the
// given --set flags, as `istioctl manifest generate` does, and extracts the
// injector's configuration.
func renderCharts(flags []string) (*rendered, error) {
	sets, _, err := render.GenerateManifest(nil, flags, false, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("rendering Istio's charts with %v: %w", flags, err)
	}
	r := &rendered{}
	for _, set := range sets {
		for _, m := range set.Manifests {
			switch {
			case m.GetKind() == "ConfigMap" && m.GetName() == injectorConfigMapName:
				if r.InjectionConfig, err = configMapKey(m.Object, "config"); err != nil {
					return nil, err
				}
				if r.Values, err = configMapKey(m.Object, "values"); err != nil {
					return nil, err
				}
			case m.GetKind() == "ConfigMap" && m.GetName() == meshConfigMapName:
				if r.Mesh, err = configMapKey(m.Object, "mesh"); err != nil {
					return nil, err
				}
			case m.GetKind() == "MutatingWebhookConfiguration" && m.GetName() == webhookConfigurationName:
				var mwc admissionregistrationv1.MutatingWebhookConfiguration
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m.Object, &mwc); err != nil {
					return nil, fmt.Errorf("decoding the rendered %s: %w", webhookConfigurationName, err)
				}
				r.WebhookConfiguration = &mwc
			}
		}
	}
	switch {
	case r.InjectionConfig == "":
		return nil, fmt.Errorf("rendered charts (%v) have no ConfigMap %s", flags, injectorConfigMapName)
	case r.Mesh == "":
		return nil, fmt.Errorf("rendered charts (%v) have no ConfigMap %s", flags, meshConfigMapName)
	case r.WebhookConfiguration == nil:
		return nil, fmt.Errorf("rendered charts (%v) have no MutatingWebhookConfiguration %s", flags, webhookConfigurationName)
	}
	return r, nil
}

func configMapKey(obj map[string]any, key string) (string, error) {
	data, _ := obj["data"].(map[string]any)
	v, ok := data[key].(string)
	if !ok {
		name := ""
		if md, ok := obj["metadata"].(map[string]any); ok {
			name, _ = md["name"].(string)
		}
		return "", fmt.Errorf("rendered ConfigMap %s has no data.%s", name, key)
	}
	return v, nil
}

// webhookConfiguration is the rendered configuration with every webhook's
// clientConfig pointing at url with caBundle caPEM; rules, selectors,
// failurePolicy, reinvocationPolicy, ... are the chart's.
func webhookConfiguration(rendered *admissionregistrationv1.MutatingWebhookConfiguration, url string, caPEM []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	mwc := rendered.DeepCopy()
	mwc.TypeMeta.APIVersion = admissionregistrationv1.SchemeGroupVersion.String()
	mwc.TypeMeta.Kind = "MutatingWebhookConfiguration"
	for i := range mwc.Webhooks {
		u := url
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: caPEM}
	}
	return mwc
}

// injectionPath is the path of the rendered webhooks' service reference
// (istiodRemote.injectionPath, "/inject" by default).
func injectionPath(mwc *admissionregistrationv1.MutatingWebhookConfiguration) string {
	for _, w := range mwc.Webhooks {
		if svc := w.ClientConfig.Service; svc != nil && svc.Path != nil && strings.HasPrefix(*svc.Path, "/") {
			return *svc.Path
		}
	}
	return "/inject"
}
