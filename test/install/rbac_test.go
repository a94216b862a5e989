package install_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrole/meshrole/pkg/native"
)

// access is one request the webhook's service account may or may not make;
// name, when set, is the object's name (for rules with resourceNames).
type access struct {
	verb, group, resource, subresource, namespace, name string
}

func (a access) String() string {
	r := a.resource
	if a.group != "" {
		r += "." + a.group
	}
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	if a.name != "" {
		r += " " + a.name
	}
	switch a.namespace {
	case "":
		return fmt.Sprintf("%s %s (cluster-wide)", a.verb, r)
	default:
		return fmt.Sprintf("%s %s in %s", a.verb, r, a.namespace)
	}
}

// The server's needs (docs/design.md, "Webhook contract"; cmd/webhook): informers on policies,
// namespaces, pods and webhook configurations; policy status and events
// written by the status controller; the leader-election lease in its own
// namespace. And what least privilege forbids. Both modes share these, except
// the webhook configurations (webhook mode's ordering check).
var (
	rbacAllowed = []access{
		{"get", "meshrole.io", "meshrolepolicies", "", "", ""},
		{"list", "meshrole.io", "meshrolepolicies", "", "", ""},
		{"watch", "meshrole.io", "meshrolepolicies", "", "", ""},
		{"get", "meshrole.io", "meshrolepolicies", "", "shop", ""},
		{"get", "meshrole.io", "clustermeshrolepolicies", "", "", ""},
		{"list", "meshrole.io", "clustermeshrolepolicies", "", "", ""},
		{"watch", "meshrole.io", "clustermeshrolepolicies", "", "", ""},
		{"get", "", "namespaces", "", "", ""},
		{"list", "", "namespaces", "", "", ""},
		{"watch", "", "namespaces", "", "", ""},
		{"get", "", "pods", "", "shop", ""},
		{"list", "", "pods", "", "", ""},
		{"watch", "", "pods", "", "", ""},
		{"update", "meshrole.io", "meshrolepolicies", "status", "shop", ""},
		{"update", "meshrole.io", "clustermeshrolepolicies", "status", "", ""},
		{"create", "", "events", "", "shop", ""},
		{"create", "events.k8s.io", "events", "", "shop", ""},
		{"get", "coordination.k8s.io", "leases", "", releaseNamespace, ""},
		{"create", "coordination.k8s.io", "leases", "", releaseNamespace, ""},
		{"update", "coordination.k8s.io", "leases", "", releaseNamespace, ""},
		// The Automatic rollout mode (automaticRollout.enabled, the default):
		// evictions, never deletes, and the ReplicaSet that names a pod's
		// Deployment.
		{"create", "", "pods", "eviction", "shop", ""},
		{"get", "apps", "replicasets", "", "shop", ""},
	}
	rbacDenied = []access{
		// suggestEvents.enabled is off by default: nothing it reads.
		{"list", "apps", "statefulsets", "", "", ""},
		{"list", "", "configmaps", "", "", ""},
		{"list", "apps", "replicasets", "", "", ""},
		{"get", "", "secrets", "", releaseNamespace, ""},
		{"list", "", "secrets", "", releaseNamespace, ""},
		{"list", "", "secrets", "", "", ""},
		{"get", "", "secrets", "", "shop", ""},
		{"patch", "", "pods", "", "shop", ""},
		{"update", "", "pods", "", "shop", ""},
		{"delete", "", "pods", "", "shop", ""},
		{"create", "", "pods", "", "shop", ""},
		{"create", "meshrole.io", "meshrolepolicies", "", "shop", ""},
		{"update", "meshrole.io", "meshrolepolicies", "", "shop", ""},
		{"delete", "meshrole.io", "meshrolepolicies", "", "shop", ""},
		{"create", "meshrole.io", "clustermeshrolepolicies", "", "", ""},
		{"update", "meshrole.io", "clustermeshrolepolicies", "", "", ""},
		{"create", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", ""},
		{"update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", ""},
		{"patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", ""},
		{"delete", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", ""},
		{"update", "", "namespaces", "", "", ""},
		{"create", "coordination.k8s.io", "leases", "", "kube-system", ""},
		{"update", "coordination.k8s.io", "leases", "", "kube-system", ""},
		{"create", "", "serviceaccounts", "token", releaseNamespace, ""},
	}

	// Webhook mode: the ordering check reads the webhook configurations; no
	// MutatingAdmissionPolicy access at all.
	rbacWebhookAllowed = []access{
		{"list", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", ""},
		{"watch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", ""},
	}
	rbacWebhookDenied = []access{
		{"list", "admissionregistration.k8s.io", "mutatingadmissionpolicies", "", "", ""},
		{"create", "admissionregistration.k8s.io", "mutatingadmissionpolicies", "", "", ""},
		{"create", "admissionregistration.k8s.io", "mutatingadmissionpolicybindings", "", "", ""},
		{"update", "admissionregistration.k8s.io", "mutatingadmissionpolicies", "", "", nativeNamespaceObject},
		{"get", "rbac.authorization.k8s.io", "clusterroles", "", "", nativeClusterRole},
	}

	// Native mode: the generated MutatingAdmissionPolicies and bindings (read
	// through the server's cache, written with update, never patched), and
	// the owner ClusterRole, read once at start-up. No webhook configurations.
	rbacNativeAllowed = []access{
		{"list", "admissionregistration.k8s.io", "mutatingadmissionpolicies", "", "", ""},
		{"watch", "admissionregistration.k8s.io", "mutatingadmissionpolicies", "", "", ""},
		{"create", "admissionregistration.k8s.io", "mutatingadmissionpolicies", "", "", ""},
		{"get", "admissionregistration.k8s.io", "mutatingadmissionpolicies", "", "", nativeNamespaceObject},
		{"update", "admissionregistration.k8s.io", "mutatingadmissionpolicies", "", "", nativeNamespaceObject},
		{"delete", "admissionregistration.k8s.io", "mutatingadmissionpolicies", "", "", native.ClusterObjectName},
		{"list", "admissionregistration.k8s.io", "mutatingadmissionpolicybindings", "", "", ""},
		{"watch", "admissionregistration.k8s.io", "mutatingadmissionpolicybindings", "", "", ""},
		{"create", "admissionregistration.k8s.io", "mutatingadmissionpolicybindings", "", "", ""},
		{"get", "admissionregistration.k8s.io", "mutatingadmissionpolicybindings", "", "", native.ClusterObjectName},
		{"update", "admissionregistration.k8s.io", "mutatingadmissionpolicybindings", "", "", native.ClusterObjectName},
		{"delete", "admissionregistration.k8s.io", "mutatingadmissionpolicybindings", "", "", nativeNamespaceObject},
		{"get", "rbac.authorization.k8s.io", "clusterroles", "", "", nativeClusterRole},
	}
	rbacNativeDenied = []access{
		{"list", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", ""},
		{"watch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", ""},
		{"patch", "admissionregistration.k8s.io", "mutatingadmissionpolicies", "", "", nativeNamespaceObject},
		{"deletecollection", "admissionregistration.k8s.io", "mutatingadmissionpolicies", "", "", ""},
		{"deletecollection", "admissionregistration.k8s.io", "mutatingadmissionpolicybindings", "", "", ""},
		{"create", "admissionregistration.k8s.io", "validatingadmissionpolicies", "", "", ""},
		{"create", "admissionregistration.k8s.io", "validatingadmissionpolicybindings", "", "", ""},
		// Only its own ClusterRole, only read.
		{"get", "rbac.authorization.k8s.io", "clusterroles", "", "", "cluster-admin"},
		{"get", "rbac.authorization.k8s.io", "clusterroles", "", "", fullname},
		{"list", "rbac.authorization.k8s.io", "clusterroles", "", "", ""},
		{"watch", "rbac.authorization.k8s.io", "clusterroles", "", "", ""},
		{"update", "rbac.authorization.k8s.io", "clusterroles", "", "", nativeClusterRole},
		{"delete", "rbac.authorization.k8s.io", "clusterroles", "", "", nativeClusterRole},
		{"escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", nativeClusterRole},
		{"create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", ""},
	}
)

// nativeNamespaceObject is the name native mode gives the generated objects
// of namespace "shop".
const nativeNamespaceObject = "meshrole-bucket-00"

// checkRBAC asks the API server's authorizer (SubjectAccessReview), for the
// release's ServiceAccount as the API server authenticates it, about each
// request the server needs and each that least privilege forbids.
func checkRBAC(t *testing.T, e *env, mode string) {
	allowed := append(slices.Clone(rbacAllowed), rbacWebhookAllowed...)
	denied := append(slices.Clone(rbacDenied), rbacWebhookDenied...)
	if mode == modeNative {
		allowed = append(slices.Clone(rbacAllowed), rbacNativeAllowed...)
		denied = append(slices.Clone(rbacDenied), rbacNativeDenied...)
	}
	user := fmt.Sprintf("system:serviceaccount:%s:%s", releaseNamespace, serviceAccount)
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNamespace, "system:authenticated"}
	review := func(t *testing.T, a access) *authorizationv1.SubjectAccessReviewStatus {
		t.Helper()
		sar, err := e.Clientset.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   user,
				Groups: groups,
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Namespace: a.namespace, Name: a.name,
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview: %v", err)
		}
		return &sar.Status
	}
	for _, a := range allowed {
		t.Run("can "+a.String(), func(t *testing.T) {
			if st := review(t, a); !st.Allowed {
				t.Errorf("%s cannot %s (reason %q, error %q)", user, a, st.Reason, st.EvaluationError)
			}
		})
	}
	for _, a := range denied {
		t.Run("cannot "+a.String(), func(t *testing.T) {
			if st := review(t, a); st.Allowed {
				t.Errorf("%s can %s (reason %q): more than the server needs", user, a, st.Reason)
			}
		})
	}
}

// checkPolicyAuthorRBAC: the chart aggregates MeshRolePolicy access into the
// built-in admin, edit and view roles, and nothing for ClusterMeshRolePolicy,
// which decides for every enabled namespace. A user bound to edit in one
// namespace can write its MeshRolePolicies and nothing cluster-wide.
func checkPolicyAuthorRBAC(t *testing.T, e *env) {
	const ns, user = "policy-authors", "jane@example.com"
	ctx := t.Context()
	if _, err := e.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := e.Clientset.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "jane-edit"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: user}},
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	allowed := func(a access) bool {
		sar, err := e.Clientset.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: []string{"system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Namespace: a.namespace}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview: %v", err)
		}
		return sar.Status.Allowed
	}
	// The clusterrole-aggregation controller folds the chart's roles into edit.
	write := access{"create", "meshrole.io", "meshrolepolicies", "", ns, ""}
	for deadline := time.Now().Add(20 * time.Second); !allowed(write); {
		if time.Now().After(deadline) {
			t.Fatalf("%s bound to edit in %s still cannot %s", user, ns, write)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, a := range []access{
		{"update", "meshrole.io", "meshrolepolicies", "", ns, ""},
		{"delete", "meshrole.io", "meshrolepolicies", "", ns, ""},
	} {
		if !allowed(a) {
			t.Errorf("%s bound to edit in %s cannot %s", user, ns, a)
		}
	}
	for _, a := range []access{
		{"create", "meshrole.io", "meshrolepolicies", "", "shop", ""},
		{"create", "meshrole.io", "clustermeshrolepolicies", "", "", ""},
		{"update", "meshrole.io", "clustermeshrolepolicies", "", "", ""},
		{"update", "meshrole.io", "meshrolepolicies", "status", ns, ""},
	} {
		if allowed(a) {
			t.Errorf("%s bound to edit in %s can %s", user, ns, a)
		}
	}
}
