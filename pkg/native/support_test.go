package native

import (
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	discoveryfake "k8s.io/client-go/discovery/fake"
	clienttesting "k8s.io/client-go/testing"
)

// discoveryOf fakes the discovery of an API server of the given version that
// serves these resources in admissionregistration.k8s.io/v1 (none: the
// group version is not served at all).
func discoveryOf(gitVersion string, resources ...string) *discoveryfake.FakeDiscovery {
	dc := &discoveryfake.FakeDiscovery{Fake: &clienttesting.Fake{}, FakedServerVersion: &version.Info{GitVersion: gitVersion}}
	if len(resources) > 0 {
		list := &metav1.APIResourceList{GroupVersion: "admissionregistration.k8s.io/v1"}
		for _, r := range resources {
			list.APIResources = append(list.APIResources, metav1.APIResource{Name: r})
		}
		dc.Resources = []*metav1.APIResourceList{list}
	}
	return dc
}

func TestRequireServerSupport(t *testing.T) {
	webhooksOnly := []string{"mutatingwebhookconfigurations", "validatingwebhookconfigurations", "validatingadmissionpolicies"}
	withMAP := append([]string{"mutatingadmissionpolicies", "mutatingadmissionpolicybindings"}, webhooksOnly...)
	tests := []struct {
		name string
		dc   *discoveryfake.FakeDiscovery
		want string // "" = supported
	}{
		{"1.36 serves it", discoveryOf("v1.36.3", withMAP...), ""},
		{"1.37 serves it", discoveryOf("v1.37.2", withMAP...), ""},
		{"1.34: v1 has webhooks and ValidatingAdmissionPolicy only (MutatingAdmissionPolicy is v1beta1 there)",
			discoveryOf("v1.34.4", webhooksOnly...),
			"native mode needs Kubernetes 1.36 or later (MutatingAdmissionPolicy admissionregistration.k8s.io/v1); this API server is v1.34.4; use mode: webhook"},
		{"1.32", discoveryOf("v1.32.12", webhooksOnly...),
			"native mode needs Kubernetes 1.36 or later (MutatingAdmissionPolicy admissionregistration.k8s.io/v1); this API server is v1.32.12; use mode: webhook"},
		{"a distribution's version suffix", discoveryOf("v1.35.1-eks-1234abc", webhooksOnly...),
			"native mode needs Kubernetes 1.36 or later (MutatingAdmissionPolicy admissionregistration.k8s.io/v1); this API server is v1.35.1-eks-1234abc; use mode: webhook"},
		{"admissionregistration.k8s.io/v1 not served at all", discoveryOf("v1.34.4"),
			"native mode needs Kubernetes 1.36 or later (MutatingAdmissionPolicy admissionregistration.k8s.io/v1); this API server is v1.34.4; use mode: webhook"},
		{"1.36 with the API turned off", discoveryOf("v1.36.3", webhooksOnly...),
			"native mode needs MutatingAdmissionPolicy (admissionregistration.k8s.io/v1), which this API server (v1.36.3) does not serve: " +
				"enable admissionregistration.k8s.io/v1/mutatingadmissionpolicies in its --runtime-config, or use mode: webhook"},
		{"version unknown", discoveryOf("", webhooksOnly...),
			"native mode needs Kubernetes 1.36 or later (MutatingAdmissionPolicy admissionregistration.k8s.io/v1); this API server is of an unknown version; use mode: webhook"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := RequireServerSupport(tt.dc)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want support", err)
			case tt.want != "" && err == nil:
				t.Fatalf("got support, want %q", tt.want)
			case tt.want != "" && err.Error() != tt.want:
				t.Fatalf("got  %q\nwant %q", err, tt.want)
			}
		})
	}
}

// A discovery failure is reported as one, not taken for an old API server.
func TestRequireServerSupportDiscoveryFails(t *testing.T) {
	dc := discoveryOf("v1.37.2")
	dc.PrependReactor("get", "resource", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	err := RequireServerSupport(dc)
	want := "native mode: asking the API server whether it serves admissionregistration.k8s.io/v1 mutatingadmissionpolicies: connection refused"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
}
