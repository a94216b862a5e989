// Package injector runs Istio's real sidecar injector (istio.io/istio
// pkg/kube/inject, the code istiod serves on /inject) in-process, over TLS
// on 127.0.0.1, configured exactly as an `istioctl install` of the default
// profile configures istiod: the injection template, the values and the mesh
// config come from rendering the istiod chart that is compiled into the
// istio.io/istio module (operator/pkg/render over istio.io/istio/manifests),
// and the MutatingWebhookConfiguration is the one that chart renders, with
// only its clientConfig pointed at this server.
package injector

import (
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"istio.io/istio/operator/pkg/render"
)

// Names of the rendered objects the injector is built from.
const (
	// WebhookConfigurationName is the name of Istio's MutatingWebhookConfiguration
	// for the default revision installed in istio-system.
	WebhookConfigurationName = "istio-sidecar-injector"
	// InjectorConfigMapName holds the injection template ("config") and the
	// Helm values ("values") that istiod's injector reads.
	InjectorConfigMapName = "istio-sidecar-injector"
	// MeshConfigMapName holds the mesh config ("mesh").
	MeshConfigMapName = "istio"
)

// Rendered is what the istiod chart renders for the injector.
type Rendered struct {
	// Flags are the --set flags the chart was rendered with.
	Flags []string
	// InjectionConfig is the istio-sidecar-injector ConfigMap's "config" key:
	// policy, templates (sidecar, gateway, grpc-*, waypoint, ...), selectors.
	InjectionConfig string
	// Values is the same ConfigMap's "values" key: the Helm values the
	// templates see as .Values.
	Values string
	// Mesh is the istio ConfigMap's "mesh" key.
	Mesh string
	// WebhookConfiguration is the chart's istio-sidecar-injector
	// MutatingWebhookConfiguration, as rendered (clientConfig pointing at the
	// istiod Service).
	WebhookConfiguration *admissionregistrationv1.MutatingWebhookConfiguration
}

// DefaultFlags render the default profile, as `istioctl install` does
// without arguments.
var DefaultFlags = []string{"profile=default"}

// Render renders the charts compiled into the istio.io/istio module with the
// given --set flags (DefaultFlags when none), as `istioctl manifest generate`
// does, and extracts the injector's configuration.
func Render(flags ...string) (*Rendered, error) {
	if len(flags) == 0 {
		flags = DefaultFlags
	}
	sets, _, err := render.GenerateManifest(nil, flags, false, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("rendering Istio's charts with %v: %w", flags, err)
	}
	r := &Rendered{Flags: flags}
	for _, set := range sets {
		for _, m := range set.Manifests {
			switch {
			case m.GetKind() == "ConfigMap" && m.GetName() == InjectorConfigMapName:
				if r.InjectionConfig, err = configMapKey(m.Object, "config"); err != nil {
					return nil, err
				}
				if r.Values, err = configMapKey(m.Object, "values"); err != nil {
					return nil, err
				}
			case m.GetKind() == "ConfigMap" && m.GetName() == MeshConfigMapName:
				if r.Mesh, err = configMapKey(m.Object, "mesh"); err != nil {
					return nil, err
				}
			case m.GetKind() == "MutatingWebhookConfiguration" && m.GetName() == WebhookConfigurationName:
				var mwc admissionregistrationv1.MutatingWebhookConfiguration
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m.Object, &mwc); err != nil {
					return nil, fmt.Errorf("decoding the rendered %s: %w", WebhookConfigurationName, err)
				}
				r.WebhookConfiguration = &mwc
			}
		}
	}
	switch {
	case r.InjectionConfig == "":
		return nil, fmt.Errorf("rendered charts (%v) have no ConfigMap %s", flags, InjectorConfigMapName)
	case r.Mesh == "":
		return nil, fmt.Errorf("rendered charts (%v) have no ConfigMap %s", flags, MeshConfigMapName)
	case r.WebhookConfiguration == nil:
		return nil, fmt.Errorf("rendered charts (%v) have no MutatingWebhookConfiguration %s", flags, WebhookConfigurationName)
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
