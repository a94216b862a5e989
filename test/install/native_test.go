package install_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/release"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/native"
	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/harness"
)

// The chart's modes (value `mode`, the server's --mode).
const (
	modeWebhook = "webhook"
	modeNative  = "native"
	// nativeClusterRole is the ClusterRole the chart renders in native mode
	// only: it grants the generated objects and owns them.
	nativeClusterRole = fullname + "-native"
)

// Kinds a native-mode install renders: no MutatingWebhookConfiguration, no
// certificate objects.
var nativeKinds = []string{
	"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
	"Service", "Deployment", "PodDisruptionBudget",
}

// generated selects the objects the server keeps in native mode.
var generated = client.MatchingLabels{native.ManagedByLabel: native.ManagedByValue}

// TestHelmTemplateNative renders the chart client-side with mode=native and
// checks what it renders and what it leaves out, against what the server
// needs in that mode (cmd/webhook, pkg/native).
func TestHelmTemplateNative(t *testing.T) {
	render := func(t *testing.T, vals map[string]any) (*release.Release, []*unstructured.Unstructured) {
		t.Helper()
		rel, err := renderChart(t, vals)
		if err != nil {
			t.Fatalf("helm template with %v: %v", vals, err)
		}
		return rel, manifestObjects(t, rel.Manifest)
	}

	t.Run("no webhook configuration, no certificate objects and no helm test pod, in either certificate mode", func(t *testing.T) {
		for _, certManager := range []bool{true, false} {
			rel, objs := render(t, map[string]any{"mode": modeNative, "certManager": map[string]any{"enabled": certManager}})
			got := kinds(objs)
			for _, k := range []string{"MutatingWebhookConfiguration", "Issuer", "Certificate", "Secret"} {
				if got[k] != 0 {
					t.Errorf("certManager.enabled=%v: %d %s rendered in native mode", certManager, got[k], k)
				}
			}
			for _, k := range nativeKinds {
				if got[k] == 0 {
					t.Errorf("certManager.enabled=%v: no %s rendered in native mode (kinds %v)", certManager, k, got)
				}
			}
			for _, h := range rel.Hooks {
				t.Errorf("certManager.enabled=%v: hook %s (%s) rendered in native mode: there is no webhook to test", certManager, h.Name, h.Path)
			}
		}
	})

	t.Run("the Deployment runs /webhook --mode=native with the native flags, without a certificate or a webhook port", func(t *testing.T) {
		for _, fp := range []string{"Fail", "Ignore"} {
			_, objs := render(t, map[string]any{"mode": modeNative, "webhook": map[string]any{"failurePolicy": fp}})
			d := typed[appsv1.Deployment](t, find(t, objs, "Deployment", fullname))
			c := d.Spec.Template.Spec.Containers[0]
			want := []string{
				"--mode=native",
				"--metrics-bind-address=:8080",
				"--health-probe-bind-address=:8081",
				"--leader-elect",
				"--native-excluded-namespaces=kube-system," + releaseNamespace,
				"--native-failure-policy=" + fp,
				"--native-owner-cluster-role=" + nativeClusterRole,
			}
			if !slices.Equal(c.Command, []string{"/webhook"}) || !slices.Equal(c.Args, want) {
				t.Errorf("failurePolicy %s: command %q args %q, want [/webhook] %q", fp, c.Command, c.Args, want)
			}
			var ports []string
			for _, p := range c.Ports {
				ports = append(ports, p.Name+":"+strconv.Itoa(int(p.ContainerPort)))
			}
			if !slices.Equal(ports, []string{"metrics:8080", "healthz:8081"}) {
				t.Errorf("container ports %v, want only metrics:8080 and healthz:8081", ports)
			}
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Secret != nil {
					t.Errorf("volume %s mounts Secret %s in native mode", v.Name, v.Secret.SecretName)
				}
			}
			for _, m := range c.VolumeMounts {
				if m.Name == "tls" || strings.HasPrefix(m.MountPath, "/etc/meshrole") {
					t.Errorf("volume mount %s at %s in native mode", m.Name, m.MountPath)
				}
			}
		}
	})

	t.Run("the Service only exposes the metrics port (for the ServiceMonitor)", func(t *testing.T) {
		_, objs := render(t, map[string]any{"mode": modeNative, "metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}}})
		svc := typed[corev1.Service](t, find(t, objs, "Service", fullname))
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].Port != 8080 {
			t.Errorf("Service ports %+v, want only metrics:8080", svc.Spec.Ports)
		}
		sm := find(t, objs, "ServiceMonitor", fullname)
		endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		if len(endpoints) != 1 || endpoints[0].(map[string]any)["port"] != "metrics" {
			t.Errorf("ServiceMonitor endpoints %v, want the Service's metrics port", endpoints)
		}
	})

	t.Run("RBAC: the native ClusterRole grants the generated objects and itself; the common one no webhook configurations", func(t *testing.T) {
		_, objs := render(t, map[string]any{"mode": modeNative})
		common := typed[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", fullname))
		for _, r := range common.Rules {
			if slices.Contains(r.Resources, "mutatingwebhookconfigurations") {
				t.Errorf("ClusterRole %s grants %v on mutatingwebhookconfigurations in native mode (no ordering check there)", fullname, r.Verbs)
			}
		}
		role := typed[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", nativeClusterRole))
		want := []rbacv1.PolicyRule{
			{
				APIGroups: []string{"admissionregistration.k8s.io"},
				Resources: []string{"mutatingadmissionpolicies", "mutatingadmissionpolicybindings"},
				Verbs:     []string{"get", "list", "watch", "create", "update", "delete"},
			},
			{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"clusterroles"}, ResourceNames: []string{nativeClusterRole}, Verbs: []string{"get"}},
		}
		if fmt.Sprint(role.Rules) != fmt.Sprint(want) {
			t.Errorf("ClusterRole %s rules:\n%+v\nwant\n%+v", nativeClusterRole, role.Rules, want)
		}
		b := typed[rbacv1.ClusterRoleBinding](t, find(t, objs, "ClusterRoleBinding", nativeClusterRole))
		if b.RoleRef.Name != nativeClusterRole || len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" ||
			b.Subjects[0].Name != serviceAccount || b.Subjects[0].Namespace != releaseNamespace {
			t.Errorf("ClusterRoleBinding %s: roleRef %+v subjects %+v, want %s for ServiceAccount %s/%s", b.Name, b.RoleRef, b.Subjects, nativeClusterRole, releaseNamespace, serviceAccount)
		}
	})

	t.Run("webhook mode passes --mode=webhook and renders nothing of native mode", func(t *testing.T) {
		_, objs := render(t, nil)
		d := typed[appsv1.Deployment](t, find(t, objs, "Deployment", fullname))
		args := d.Spec.Template.Spec.Containers[0].Args
		if len(args) == 0 || args[0] != "--mode=webhook" {
			t.Errorf("args %q, want --mode=webhook first", args)
		}
		for _, a := range args {
			if strings.HasPrefix(a, "--native-") {
				t.Errorf("native flag %s in webhook mode", a)
			}
		}
		for _, u := range objs {
			if u.GetName() == nativeClusterRole {
				t.Errorf("%s rendered in webhook mode", objectID(u))
			}
		}
	})
}

// find returns the rendered object of that kind and name.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, u := range objs {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	t.Fatalf("no %s %s rendered (rendered: %v)", kind, name, objectIDs(objs))
	return nil
}

// typed converts a rendered object into its Go type.
func typed[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		t.Fatalf("%s: %v", objectID(u), err)
	}
	return out
}

// TestInstallNativeMode installs the chart with mode=native, no cert-manager
// involved, and runs the server as its Deployment would: no webhook
// configuration and no certificate anywhere, the server (with the release's
// ServiceAccount's permissions) keeps MutatingAdmissionPolicies that the API
// server runs on pods, and `helm uninstall` takes them away through their
// owner reference to the release's ClusterRole.
func TestInstallNativeMode(t *testing.T) {
	e := controlPlane(t)
	e.skipWithoutNative(t)
	e.cleanSlateAfter(t)
	ctx := t.Context()
	rel := e.helmInstall(t, map[string]any{"mode": modeNative})

	t.Run("every rendered object is accepted by the API server; no webhook configuration, certificate or test hook", func(t *testing.T) {
		checkAccepted(t, e, rel, nativeKinds)
		got := kinds(manifestObjects(t, rel.Manifest))
		for _, k := range []string{"MutatingWebhookConfiguration", "Issuer", "Certificate", "Secret"} {
			if got[k] != 0 {
				t.Errorf("%d %s rendered in native mode", got[k], k)
			}
		}
		if len(rel.Hooks) != 0 {
			t.Errorf("native mode renders %d hooks, want none", len(rel.Hooks))
		}
		checkNoWebhookConfigurations(t, e)
		// The only Secret is Helm's release record.
		var secrets corev1.SecretList
		if err := e.Client.List(ctx, &secrets, client.InNamespace(releaseNamespace)); err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets.Items {
			if s.Labels["owner"] != "helm" {
				t.Errorf("Secret %s in %s in native mode", s.Name, releaseNamespace)
			}
		}
	})

	t.Run("the service account can do what native mode needs and nothing more", func(t *testing.T) {
		checkRBAC(t, e, modeNative)
	})

	// End to end. The server runs from here to the end, as the
	// Deployment's pods would while `helm uninstall` deletes the release,
	// and the policy stays in place.
	w := startLocalNative(t, e, "native")
	// A second replica, as the chart's two: it does not lead, and must be
	// ready all the same (a rollout with maxUnavailable 0 waits for it).
	startLocalNative(t, e, "native-2")
	e2eNative(t, e, "shop-native")

	t.Run("helm uninstall removes everything the chart created, and the garbage collector the generated objects", func(t *testing.T) {
		n := countGenerated(t, e)
		if n == 0 {
			t.Fatal("no generated objects before helm uninstall")
		}
		if !w.Running() {
			t.Fatalf("the server is not running (%s)", w.ExitStatus())
		}
		start := time.Now()
		e.helmUninstall(t)
		checkUninstalled(t, e, rel)
		// The MeshRolePolicy they were compiled from is still there: the
		// server would keep them; what removes them is their owner
		// reference to the deleted ClusterRole (kube-controller-manager's
		// garbage collector), and the server, whose RBAC went with it,
		// cannot put them back.
		waitGeneratedGone(t, e, 60*time.Second)
		t.Logf("%d generated objects gone %v after helm uninstall started", n, time.Since(start).Round(time.Millisecond))
		stayGone(t, e, 3*time.Second)
	})
}

// TestSwitchWebhookAndNativeModes moves a release from webhook mode to native
// mode and back with `helm upgrade`.
func TestSwitchWebhookAndNativeModes(t *testing.T) {
	e := controlPlane(t)
	e.skipWithoutNative(t)
	e.cleanSlateAfter(t)
	ctx := t.Context()
	webhookVals := map[string]any{"certManager": map[string]any{"enabled": false}}
	nativeVals := map[string]any{"mode": modeNative, "certManager": map[string]any{"enabled": false}}

	rel := e.helmInstall(t, webhookVals)
	installedWebhook(t, e)
	if _, err := getSecret(ctx, e, generatedSecret); err != nil {
		t.Fatal(err)
	}

	rel = e.helmUpgrade(t, nativeVals)
	t.Run("helm upgrade to mode=native removes the webhook configuration and the certificate", func(t *testing.T) {
		checkNoWebhookConfigurations(t, e)
		if _, err := getSecret(ctx, e, generatedSecret); !apierrors.IsNotFound(err) {
			t.Errorf("Secret %s after switching to native mode: %v, want it deleted", generatedSecret, err)
		}
		var role rbacv1.ClusterRole
		if err := e.Client.Get(ctx, client.ObjectKey{Name: nativeClusterRole}, &role); err != nil {
			t.Errorf("ClusterRole %s: %v", nativeClusterRole, err)
		}
		d := installedDeployment(t, e)
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				t.Errorf("the Deployment still mounts Secret %s", v.Secret.SecretName)
			}
		}
		if args := d.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--mode=native") {
			t.Errorf("Deployment args %q lack --mode=native", args)
		}
	})

	// The Deployment's pods, rolled onto native mode.
	startLocalNative(t, e, "switch-native")
	checkEurekaVerdicts(t, e, "tonative", modeNative)
	if countGenerated(t, e) == 0 {
		t.Fatal("no generated objects in native mode")
	}

	t.Run("helm upgrade back to mode=webhook: the generated objects go with the native ClusterRole, the webhook configuration is back", func(t *testing.T) {
		rel = e.helmUpgrade(t, webhookVals)
		// The native-mode server still runs (its pods are the last to go in
		// a rollout), but lost its permissions with the ClusterRole.
		waitGeneratedGone(t, e, 60*time.Second)
		stayGone(t, e, 3*time.Second)
		if err := e.Client.Get(ctx, client.ObjectKey{Name: nativeClusterRole}, &rbacv1.ClusterRole{}); !apierrors.IsNotFound(err) {
			t.Errorf("ClusterRole %s after switching back to webhook mode: %v, want it deleted", nativeClusterRole, err)
		}
		checkWebhookContract(t, e)
		s, err := getSecret(ctx, e, generatedSecret)
		if err != nil {
			t.Fatal(err)
		}
		_, w := installedWebhook(t, e)
		verifyServing(t, w.ClientConfig.CABundle, s.Data["tls.crt"], serviceDNSNames...)
		if got := deploymentSecret(t, e); got != generatedSecret {
			t.Errorf("the Deployment mounts Secret %s, want %s", got, generatedSecret)
		}
	})

	t.Run("helm uninstall removes everything", func(t *testing.T) {
		e.helmUninstall(t)
		checkUninstalled(t, e, rel)
	})
}

// startLocalNative runs bin/webhook as the chart's Deployment runs it: the
// container's arguments as installed (read back from the API server), with
// the listen addresses moved to 127.0.0.1, a token for the release's
// ServiceAccount, and the leader-election namespace that the pod gets from
// $POD_NAMESPACE (downward API). Leader election is on, as in the
// Deployment: the lease is taken with the chart's Role. It runs until t ends.
func startLocalNative(t *testing.T, e *env, name string) *harness.Webhook {
	t.Helper()
	d := installedDeployment(t, e)
	c := d.Spec.Template.Spec.Containers[0]
	if !slices.Equal(c.Command, []string{"/webhook"}) || !slices.Contains(c.Args, "--mode=native") {
		t.Fatalf("the installed Deployment runs %q %q, not /webhook --mode=native", c.Command, c.Args)
	}
	w, err := harness.NewWebhook(harness.WebhookProcess{
		Name:    "meshrole server (native mode)",
		Bin:     e.WebhookBin,
		LogPath: filepath.Join(workDir, name, "server.log"),
		Args: append(slices.Clone(c.Args),
			"--kubeconfig="+serviceAccountKubeconfig(t, e, name),
			"--leader-election-namespace="+releaseNamespace,
		),
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	runLocal(t, w)
	t.Logf("%s %s: ready in %v", e.WebhookBin, strings.Join(w.Args(), " "), time.Since(start).Round(time.Millisecond))
	return w
}

func installedDeployment(t *testing.T, e *env) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	if err := e.Client.Get(t.Context(), client.ObjectKey{Namespace: releaseNamespace, Name: fullname}, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

// e2eNative checks native mode through the API server: the Eureka example's
// verdicts, the generated objects and their owner, the namespaces the chart
// excludes, and a generated object deleted by hand.
func e2eNative(t *testing.T, e *env, appNS string) {
	ctx := t.Context()
	c := e.Client
	// The objects that decide appNS, which has a MeshRolePolicy.
	own := native.BucketOf(appNS)

	checkEurekaVerdicts(t, e, appNS, modeNative)

	t.Run("no MutatingWebhookConfiguration is on the path", func(t *testing.T) {
		checkNoWebhookConfigurations(t, e)
	})

	t.Run("the generated objects are labelled, configured as the chart says and owned by its ClusterRole", func(t *testing.T) {
		// A namespace's first MeshRolePolicy is handed over from the
		// cluster-wide object to the namespace's own in steps; then only
		// the namespace's own policy and binding are left.
		waitGenerated(t, e, own, own)
		checkGenerated(t, e, appNS)
	})

	t.Run("the release namespace and kube-system are never mutated, even labelled", func(t *testing.T) {
		control := enableExcludedNamespaces(t, e, appNS)
		// A policy for every enabled namespace.
		everywhere := &v1alpha1.ClusterMeshRolePolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "install-native-everywhere"},
			Spec: v1alpha1.ClusterMeshRolePolicySpec{PolicySpec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{
				Name: "peers", Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "cluster-peer"}},
				Role: v1alpha1.RolePeerStateful, Peer: &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxySkip},
			}}}},
		}
		if err := c.Create(ctx, everywhere); err != nil {
			t.Fatal(err)
		}
		deleted := false
		t.Cleanup(func() {
			if !deleted {
				_ = c.Delete(context.Background(), everywhere)
			}
		})
		lbls := map[string]string{"app": "cluster-peer"}
		gets := func(ns string) (bool, string, error) {
			p := harness.ProbePod(ns, lbls)
			if err := c.Create(ctx, p, client.DryRunAll); err != nil {
				return false, err.Error(), nil
			}
			return p.Annotations[policy.RoleAnnotation] == string(v1alpha1.RolePeerStateful), fmt.Sprintf("annotations %v", p.Annotations), nil
		}
		// The control namespace was labelled last: once its pods get the
		// cluster policy's verdict, the API server has seen the labels of
		// meshrole-system and kube-system too.
		if err := eventually(ctx, 30*time.Second, func() (bool, string, error) { return gets(control.Name) }); err != nil {
			t.Fatalf("ClusterMeshRolePolicy %s not applied in %s: %v", everywhere.Name, control.Name, err)
		}
		waitGenerated(t, e, own, native.ClusterObjectName, own, native.ClusterObjectName)
		checkGenerated(t, e, appNS)
		for _, name := range []string{releaseNamespace, "kube-system"} {
			p := createPod(t, t, e, name, lbls)
			for k, v := range p.Annotations {
				if strings.HasPrefix(k, "meshrole.io/") || strings.Contains(k, "istio.io/") {
					t.Errorf("namespace %s (labelled %s=true): pod got annotation %s=%q", name, policy.EnabledNamespaceLabel, k, v)
				}
			}
			if _, ok := p.Labels[policy.IstioInjectKey]; ok {
				t.Errorf("namespace %s: pod got label %s", name, policy.IstioInjectKey)
			}
			t.Logf("namespace %s (labelled %s=true): pod %s created unchanged", name, policy.EnabledNamespaceLabel, p.Name)
		}

		// Without it, the server deletes the cluster-wide object and
		// updates the namespace's own.
		if err := c.Delete(ctx, everywhere); err != nil {
			t.Fatal(err)
		}
		deleted = true
		waitGenerated(t, e, own, own)
		if err := eventually(ctx, 30*time.Second, func() (bool, string, error) {
			done, reason, err := gets(control.Name)
			return !done, reason, err
		}); err != nil {
			t.Errorf("ClusterMeshRolePolicy %s deleted, pods in %s still get its verdict: %v", everywhere.Name, control.Name, err)
		}
	})

	t.Run("a generated policy deleted by hand is put back", func(t *testing.T) {
		var before admissionregistrationv1.MutatingAdmissionPolicy
		if err := c.Get(ctx, client.ObjectKey{Name: own}, &before); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, &before); err != nil {
			t.Fatal(err)
		}
		if err := eventually(ctx, 30*time.Second, func() (bool, string, error) {
			var after admissionregistrationv1.MutatingAdmissionPolicy
			err := c.Get(ctx, client.ObjectKey{Name: own}, &after)
			switch {
			case apierrors.IsNotFound(err):
				return false, "not recreated", nil
			case err != nil:
				return false, "", err
			}
			return after.UID != before.UID, "still the deleted one", nil
		}); err != nil {
			t.Errorf("MutatingAdmissionPolicy %s: %v", own, err)
		}
	})
}

// waitGenerated waits until the generated policies, then bindings, are
// exactly names (each list sorted by name).
func waitGenerated(t *testing.T, e *env, names ...string) {
	t.Helper()
	if err := eventually(t.Context(), 30*time.Second, func() (bool, string, error) {
		got := generatedNames(t, e)
		return slices.Equal(got, names), fmt.Sprintf("generated %v, want %v", got, names), nil
	}); err != nil {
		t.Fatal(err)
	}
}

// checkGenerated checks every generated policy and binding: meshrole's
// label, one owner reference, to the ClusterRole the chart made for it
// (its current UID), the failurePolicy the chart passed (Fail), each
// binding naming its policy; and, between them, that the bindings select
// appNS while it is labelled meshrole.io/enabled=true, never when it is not,
// and never the release namespace or kube-system.
func checkGenerated(t *testing.T, e *env, appNS string) {
	t.Helper()
	ctx := t.Context()
	var role rbacv1.ClusterRole
	if err := e.Client.Get(ctx, client.ObjectKey{Name: nativeClusterRole}, &role); err != nil {
		t.Fatal(err)
	}
	var policies admissionregistrationv1.MutatingAdmissionPolicyList
	var bindings admissionregistrationv1.MutatingAdmissionPolicyBindingList
	if err := e.Client.List(ctx, &policies, generated); err != nil {
		t.Fatal(err)
	}
	if err := e.Client.List(ctx, &bindings, generated); err != nil {
		t.Fatal(err)
	}
	var objs []client.Object
	names := map[string]bool{}
	for i := range policies.Items {
		p := &policies.Items[i]
		objs = append(objs, p)
		names[p.Name] = true
		if fp := p.Spec.FailurePolicy; fp == nil || *fp != admissionregistrationv1.Fail {
			t.Errorf("MutatingAdmissionPolicy %s: failurePolicy %v, want Fail (webhook.failurePolicy)", p.Name, fp)
		}
	}
	selects := func(lbls map[string]string) []string {
		var by []string
		for i := range bindings.Items {
			b := &bindings.Items[i]
			if b.Spec.MatchResources == nil {
				continue
			}
			sel, err := metav1.LabelSelectorAsSelector(b.Spec.MatchResources.NamespaceSelector)
			if err != nil {
				t.Fatalf("binding %s: %v", b.Name, err)
			}
			if sel.Matches(labels.Set(lbls)) {
				by = append(by, b.Name)
			}
		}
		return by
	}
	for i := range bindings.Items {
		b := &bindings.Items[i]
		objs = append(objs, b)
		if !names[b.Spec.PolicyName] {
			t.Errorf("MutatingAdmissionPolicyBinding %s binds %q, which is not a generated policy", b.Name, b.Spec.PolicyName)
		}
		if b.Spec.MatchResources == nil || b.Spec.MatchResources.NamespaceSelector == nil {
			t.Errorf("MutatingAdmissionPolicyBinding %s selects every namespace", b.Name)
		}
	}
	for _, o := range objs {
		id := fmt.Sprintf("%T %s", o, o.GetName())
		if o.GetLabels()[native.ManagedByLabel] != native.ManagedByValue {
			t.Errorf("%s: labels %v", id, o.GetLabels())
		}
		refs := o.GetOwnerReferences()
		if len(refs) != 1 || refs[0].APIVersion != "rbac.authorization.k8s.io/v1" || refs[0].Kind != "ClusterRole" ||
			refs[0].Name != nativeClusterRole || refs[0].UID != role.UID {
			t.Errorf("%s: ownerReferences %+v, want ClusterRole %s (uid %s)", id, refs, nativeClusterRole, role.UID)
		}
	}
	enabled := func(ns string) map[string]string {
		return map[string]string{policy.EnabledNamespaceLabel: "true", corev1.LabelMetadataName: ns}
	}
	if by := selects(enabled(appNS)); len(by) == 0 {
		t.Errorf("no generated binding selects namespace %s", appNS)
	}
	for _, lbls := range []map[string]string{
		{corev1.LabelMetadataName: appNS},
		enabled(releaseNamespace),
		enabled("kube-system"),
	} {
		if by := selects(lbls); len(by) > 0 {
			t.Errorf("bindings %v select a namespace labelled %v", by, lbls)
		}
	}
	t.Logf("%d generated policies and %d bindings, owned by ClusterRole %s", len(policies.Items), len(bindings.Items), nativeClusterRole)
}

// checkNoWebhookConfigurations: nothing in the cluster sends admissions to a
// webhook.
func checkNoWebhookConfigurations(t *testing.T, e *env) {
	t.Helper()
	var mwcs admissionregistrationv1.MutatingWebhookConfigurationList
	if err := e.Client.List(t.Context(), &mwcs); err != nil {
		t.Fatal(err)
	}
	for _, m := range mwcs.Items {
		t.Errorf("MutatingWebhookConfiguration %s exists in native mode", m.Name)
	}
}

// generatedNames lists the generated policies' names, then the bindings'.
func generatedNames(t *testing.T, e *env) []string {
	t.Helper()
	var policies admissionregistrationv1.MutatingAdmissionPolicyList
	var bindings admissionregistrationv1.MutatingAdmissionPolicyBindingList
	if err := e.Client.List(t.Context(), &policies, generated); err != nil {
		t.Fatal(err)
	}
	if err := e.Client.List(t.Context(), &bindings, generated); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range policies.Items {
		names = append(names, p.Name)
	}
	for _, b := range bindings.Items {
		names = append(names, b.Name)
	}
	return names
}

func countGenerated(t *testing.T, e *env) int {
	t.Helper()
	return len(generatedNames(t, e))
}

// waitGeneratedGone waits until no generated policy or binding is left.
func waitGeneratedGone(t *testing.T, e *env, timeout time.Duration) {
	t.Helper()
	if err := eventually(t.Context(), timeout, func() (bool, string, error) {
		names := generatedNames(t, e)
		return len(names) == 0, fmt.Sprintf("left: %v", names), nil
	}); err != nil {
		t.Fatalf("generated MutatingAdmissionPolicies and bindings: %v", err)
	}
}

// stayGone checks for d that no generated object comes back.
func stayGone(t *testing.T, e *env, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if names := generatedNames(t, e); len(names) > 0 {
			t.Fatalf("generated objects came back: %v", names)
		}
	}
}
