package install_test

import (
	"fmt"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// access is one request the webhook's service account may or may not make.
type access struct {
	verb, group, resource, subresource, namespace string
}

func (a access) String() string {
	r := a.resource
	if a.group != "" {
		r += "." + a.group
	}
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	switch a.namespace {
	case "":
		return fmt.Sprintf("%s %s (cluster-wide)", a.verb, r)
	default:
		return fmt.Sprintf("%s %s in %s", a.verb, r, a.namespace)
	}
}

// The server's needs (DESIGN.md §5, cmd/webhook): informers on policies,
// namespaces, pods and webhook configurations; policy status and events
// written by the status controller; the leader-election lease in its own
// namespace. And what least privilege forbids.
var (
	rbacAllowed = []access{
		{"get", "meshrole.io", "meshrolepolicies", "", ""},
		{"list", "meshrole.io", "meshrolepolicies", "", ""},
		{"watch", "meshrole.io", "meshrolepolicies", "", ""},
		{"get", "meshrole.io", "meshrolepolicies", "", "shop"},
		{"get", "meshrole.io", "clustermeshrolepolicies", "", ""},
		{"list", "meshrole.io", "clustermeshrolepolicies", "", ""},
		{"watch", "meshrole.io", "clustermeshrolepolicies", "", ""},
		{"get", "", "namespaces", "", ""},
		{"list", "", "namespaces", "", ""},
		{"watch", "", "namespaces", "", ""},
		{"get", "", "pods", "", "shop"},
		{"list", "", "pods", "", ""},
		{"watch", "", "pods", "", ""},
		{"list", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", ""},
		{"watch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", ""},
		{"update", "meshrole.io", "meshrolepolicies", "status", "shop"},
		{"update", "meshrole.io", "clustermeshrolepolicies", "status", ""},
		{"create", "", "events", "", "shop"},
		{"create", "events.k8s.io", "events", "", "shop"},
		{"get", "coordination.k8s.io", "leases", "", releaseNamespace},
		{"create", "coordination.k8s.io", "leases", "", releaseNamespace},
		{"update", "coordination.k8s.io", "leases", "", releaseNamespace},
	}
	rbacDenied = []access{
		{"get", "", "secrets", "", releaseNamespace},
		{"list", "", "secrets", "", releaseNamespace},
		{"list", "", "secrets", "", ""},
		{"get", "", "secrets", "", "shop"},
		{"patch", "", "pods", "", "shop"},
		{"update", "", "pods", "", "shop"},
		{"delete", "", "pods", "", "shop"},
		{"create", "", "pods", "", "shop"},
		{"create", "meshrole.io", "meshrolepolicies", "", "shop"},
		{"update", "meshrole.io", "meshrolepolicies", "", "shop"},
		{"delete", "meshrole.io", "meshrolepolicies", "", "shop"},
		{"create", "meshrole.io", "clustermeshrolepolicies", "", ""},
		{"update", "meshrole.io", "clustermeshrolepolicies", "", ""},
		{"create", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", ""},
		{"update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", ""},
		{"patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", ""},
		{"delete", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", ""},
		{"update", "", "namespaces", "", ""},
		{"create", "coordination.k8s.io", "leases", "", "kube-system"},
		{"update", "coordination.k8s.io", "leases", "", "kube-system"},
		{"create", "", "serviceaccounts", "token", releaseNamespace},
	}
)

// checkRBAC asks the API server's authorizer (SubjectAccessReview), for the
// release's ServiceAccount as the API server authenticates it, about each
// request the server needs and each that least privilege forbids.
func checkRBAC(t *testing.T, e *env) {
	user := fmt.Sprintf("system:serviceaccount:%s:%s", releaseNamespace, serviceAccount)
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNamespace, "system:authenticated"}
	review := func(t *testing.T, a access) *authorizationv1.SubjectAccessReviewStatus {
		t.Helper()
		sar, err := e.Clientset.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   user,
				Groups: groups,
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Namespace: a.namespace,
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview: %v", err)
		}
		return &sar.Status
	}
	for _, a := range rbacAllowed {
		t.Run("can "+a.String(), func(t *testing.T) {
			if st := review(t, a); !st.Allowed {
				t.Errorf("%s cannot %s (reason %q, error %q)", user, a, st.Reason, st.EvaluationError)
			}
		})
	}
	for _, a := range rbacDenied {
		t.Run("cannot "+a.String(), func(t *testing.T) {
			if st := review(t, a); st.Allowed {
				t.Errorf("%s can %s (reason %q): more than the server needs", user, a, st.Reason)
			}
		})
	}
}
