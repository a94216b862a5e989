package istio_test

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/harness"
	"github.com/meshrole/meshrole/test/istio/injector"
)

// TestMeshroleBeforeIstio runs meshrole as deployed (00-meshrole, called
// before Istio's istio-sidecar-injector) with Istio's real injector as the
// second mutating webhook, and checks what the API server stores for pods the
// StatefulSet and Deployment controllers create.
func TestMeshroleBeforeIstio(t *testing.T) {
	e := startEnv(t, harness.WebhookConfigurationName, harness.ModeWebhook)

	t.Run("Istio's webhook configuration is its chart's default: namespace and object webhooks, objectSelector inject NotIn [false], failurePolicy Fail, reinvocationPolicy Never", func(t *testing.T) {
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		if err := e.h.Client.Get(t.Context(), client.ObjectKey{Name: injector.WebhookConfigurationName}, &mwc); err != nil {
			t.Fatal(err)
		}
		byName := map[string]admissionregistrationv1.MutatingWebhook{}
		for _, w := range mwc.Webhooks {
			byName[w.Name] = w
			t.Logf("%s: namespaceSelector %s, objectSelector %s, failurePolicy %s, reinvocationPolicy %s",
				w.Name, selectorString(w.NamespaceSelector), selectorString(w.ObjectSelector), ptrString(w.FailurePolicy), ptrString(w.ReinvocationPolicy))
			if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Fail {
				t.Errorf("%s: failurePolicy %s, want Fail", w.Name, ptrString(w.FailurePolicy))
			}
			if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionregistrationv1.NeverReinvocationPolicy {
				t.Errorf("%s: reinvocationPolicy %s, want Never", w.Name, ptrString(w.ReinvocationPolicy))
			}
		}
		ns, ok := byName["namespace.sidecar-injector.istio.io"]
		if !ok {
			t.Fatalf("no namespace.sidecar-injector.istio.io webhook in %v", mwc.Webhooks)
		}
		if got := selectorString(ns.NamespaceSelector); got != "istio-injection in (enabled)" {
			t.Errorf("namespace webhook namespaceSelector %q", got)
		}
		if got := selectorString(ns.ObjectSelector); got != "sidecar.istio.io/inject notin (false)" {
			t.Errorf("namespace webhook objectSelector %q", got)
		}
		obj, ok := byName["object.sidecar-injector.istio.io"]
		if !ok {
			t.Fatalf("no object.sidecar-injector.istio.io webhook in %v", mwc.Webhooks)
		}
		if got := selectorString(obj.NamespaceSelector); got != "!istio-injection,!istio.io/rev" {
			t.Errorf("object webhook namespaceSelector %q", got)
		}
		if got := selectorString(obj.ObjectSelector); got != "!istio.io/rev,sidecar.istio.io/inject in (true)" {
			t.Errorf("object webhook objectSelector %q", got)
		}
		if !sort.StringsAreSorted([]string{harness.WebhookConfigurationName, mwc.Name}) {
			t.Errorf("%s does not sort before %s", harness.WebhookConfigurationName, mwc.Name)
		}
	})

	t.Run("control: without meshrole, Istio injects the eureka-server StatefulSet's pods", func(t *testing.T) {
		const ns = "eureka-unmanaged"
		e.namespace(t, ns, map[string]string{istioInjectionLabel: "enabled"})
		e.waitForIstio(t, ns)
		e.create(t, statefulSet(ns, "eureka-server", 1, map[string]string{policy.IstioInjectKey: "true"}, nil, 8761))
		for _, p := range e.pods(t, ns, "eureka-server", 1) {
			if !hasIstioProxy(&p) {
				t.Errorf("pod %s has no %s; containers: %v", p.Name, istioProxy, containerNames(&p))
			}
			proxy, _ := findContainer(&p, istioProxy)
			if proxy != nil {
				t.Logf("pod %s: %v; istio-proxy image %s", p.Name, containerNames(&p), proxy.Image)
			}
		}
	})

	t.Run(seedPeersTitle, func(t *testing.T) { seedPeers(t, e) })

	t.Run(seedClientsTitle, func(t *testing.T) { seedClients(t, e) })

	t.Run("zookeeper StatefulSet (peer-stateful, BypassPorts 2888,3888) pods keep istio-proxy and istio-init excludes the peer ports inbound and outbound", func(t *testing.T) {
		const ns = "zookeeper"
		e.meshNamespace(t, ns, "zookeeper", v1alpha1.Workload{
			Name:     "zk-quorum",
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "zookeeper"}},
			Role:     v1alpha1.RolePeerStateful,
			Peer:     &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxyBypassPorts, Ports: []v1alpha1.Port{2888, 3888}},
		})
		e.create(t, statefulSet(ns, "zookeeper", 3, nil, nil, 2181, 2888, 3888))

		for _, p := range e.pods(t, ns, "zookeeper", 3) {
			if !hasIstioProxy(&p) {
				t.Errorf("pod %s has no %s; containers: %v", p.Name, istioProxy, containerNames(&p))
				continue
			}
			args := e.iptablesArgs(t, &p)
			t.Logf("pod %s: %v; istio-iptables args %q", p.Name, containerNames(&p), args)
			if in, ok := flagValue(args, "-d"); !ok || !portsIn(in, "2888", "3888") {
				t.Errorf("pod %s: istio-iptables args %q do not exclude inbound 2888,3888 (-d)", p.Name, args)
			}
			if out, ok := flagValue(args, "-o"); !ok || !portsIn(out, "2888", "3888") {
				t.Errorf("pod %s: istio-iptables args %q do not exclude outbound 2888,3888 (-o)", p.Name, args)
			}
			// The client port still goes through the sidecar.
			if in, _ := flagValue(args, "-d"); portsIn(in, "2181") {
				t.Errorf("pod %s: client port 2181 excluded inbound (-d %s)", p.Name, in)
			}
		}
	})

	t.Run("holdApplicationUntilProxyStarts reaches the injected pod as Istio renders it", func(t *testing.T) {
		const ns = "orders"
		e.meshNamespace(t, ns, "orders", v1alpha1.Workload{
			Name: "orders",
			Selector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"orders", "orders-classic"},
			}}},
			Role:   v1alpha1.RoleClientStateless,
			Client: &v1alpha1.ClientSettings{HoldApplicationUntilProxyStarts: true},
		})
		// Istio's default on a cluster whose kubelets are all >= 1.33 (this
		// one has no nodes): istio-proxy as a native sidecar.
		e.create(t, deployment(ns, "orders", 1, nil, nil, 8080))
		// The same with native sidecars turned off for the pod: istio-proxy
		// as the first regular container with a postStart hook.
		e.create(t, deployment(ns, "orders-classic", 1, nil, map[string]string{nativeSidecarAnno: "false"}, 8080))

		native := e.pods(t, ns, "orders", 1)[0]
		classic := e.pods(t, ns, "orders-classic", 1)[0]
		for _, p := range []*corev1.Pod{&native, &classic} {
			if !strings.Contains(p.Annotations[policy.IstioProxyConfig], policy.HoldApplicationUntilProxyStarts) {
				t.Errorf("pod %s: %s = %q, want holdApplicationUntilProxyStarts", p.Name, policy.IstioProxyConfig, p.Annotations[policy.IstioProxyConfig])
			}
			proxy, _ := findContainer(p, istioProxy)
			if proxy == nil {
				t.Fatalf("pod %s has no %s; containers: %v", p.Name, istioProxy, containerNames(p))
			}
			// The agent gets the effective ProxyConfig, annotation merged in.
			pc, _ := envValue(proxy, "PROXY_CONFIG")
			var cfg struct {
				HoldApplicationUntilProxyStarts *bool `json:"holdApplicationUntilProxyStarts"`
			}
			if err := json.Unmarshal([]byte(pc), &cfg); err != nil || cfg.HoldApplicationUntilProxyStarts == nil || !*cfg.HoldApplicationUntilProxyStarts {
				t.Errorf("pod %s: istio-proxy's PROXY_CONFIG does not hold the application: %s", p.Name, pc)
			}
		}

		t.Logf("default pod: %v", containerNames(&native))
		proxy, init := findContainer(&native, istioProxy)
		if init {
			// Native sidecar: Kubernetes starts the app containers only once
			// istio-proxy's startupProbe passes; Istio adds no postStart hook.
			if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Errorf("native istio-proxy has restartPolicy %v, want Always", proxy.RestartPolicy)
			}
			if proxy.StartupProbe == nil {
				t.Errorf("native istio-proxy has no startupProbe: nothing holds the application")
			}
			names := containerNames(&native)
			if i, j := slices.Index(names, "init:"+istioInit), slices.Index(names, "init:"+istioProxy); i < 0 || j < i {
				t.Errorf("native istio-proxy should follow istio-init among the init containers: %v", names)
			}
		} else {
			t.Logf("Istio did not render a native sidecar for the default pod; checking the classic form")
			checkClassicHold(t, &native)
		}

		t.Logf("pod with %s=false: %v", nativeSidecarAnno, containerNames(&classic))
		if _, init := findContainer(&classic, istioProxy); init {
			t.Errorf("pod %s: istio-proxy is an init container despite %s=false", classic.Name, nativeSidecarAnno)
		}
		checkClassicHold(t, &classic)
	})

	t.Run("ambient namespace: peer-stateful pods are labelled istio.io/dataplane-mode=none and get no sidecar, where the same pods without meshrole get Istio's sidecar", func(t *testing.T) {
		// The field report's template asks for the sidecar with the label,
		// which Istio's object webhook selects in a namespace without
		// istio-injection: in an ambient namespace, without meshrole, these
		// pods get istio-proxy.
		peerLabels := map[string]string{policy.IstioInjectKey: "true"}

		const control = "ambient-unmanaged"
		e.namespace(t, control, map[string]string{policy.IstioDataplaneModeLabel: "ambient"})
		e.create(t, statefulSet(control, "eureka-server", 1, peerLabels, nil, 8761))
		for _, p := range e.pods(t, control, "eureka-server", 1) {
			t.Logf("without meshrole: pod %s: %v, labels %v", p.Name, containerNames(&p), p.Labels)
			if !hasIstioProxy(&p) {
				t.Errorf("control: pod %s has no %s: Istio would not inject it anyway, so its absence below would prove nothing; containers: %v", p.Name, istioProxy, containerNames(&p))
			}
			if got, ok := p.Labels[policy.IstioDataplaneModeLabel]; ok {
				t.Errorf("control: pod %s labelled %s=%q without meshrole", p.Name, policy.IstioDataplaneModeLabel, got)
			}
		}
		if calls := e.istioCalls(t, control, "eureka-server"); len(calls) != 1 || !calls[0].Patched {
			t.Errorf("control: Istio's injector calls for the pod: %+v; want 1 with a patch", calls)
		}

		const ns = "ambient-eureka"
		e.namespace(t, ns, map[string]string{policy.IstioDataplaneModeLabel: "ambient", policy.EnabledNamespaceLabel: "true"})
		e.policy(t, ns, "eureka", eurekaWorkloads()...)
		e.create(t, statefulSet(ns, "eureka-server", 2, peerLabels, nil, 8761))
		for _, p := range e.pods(t, ns, "eureka-server", 2) {
			if got := p.Labels[policy.IstioDataplaneModeLabel]; got != "none" {
				t.Errorf("pod %s: label %s = %q, want \"none\"", p.Name, policy.IstioDataplaneModeLabel, got)
			}
			for _, name := range []string{istioProxy, istioInit, istioValidation} {
				if c, _ := findContainer(&p, name); c != nil {
					t.Errorf("pod %s has %s in an ambient namespace; containers: %v", p.Name, name, containerNames(&p))
				}
			}
		}
		if calls := e.istioCalls(t, ns, "eureka-server"); len(calls) > 0 {
			t.Errorf("Istio's injector was called %d times for eureka-server pods; want 0 (objectSelector)", len(calls))
		}
	})

	t.Run("ambient namespace: client-stateless pods stay in ambient (no sidecar, no inject label), where the same pods in a sidecar namespace get istio-proxy", func(t *testing.T) {
		const ns = "ambient-clients"
		e.namespace(t, ns, map[string]string{policy.IstioDataplaneModeLabel: "ambient", policy.EnabledNamespaceLabel: "true"})
		e.policy(t, ns, "eureka", eurekaWorkloads()[1])
		e.create(t, deployment(ns, "eureka-client", 2, nil, nil, 8080))
		for _, p := range e.pods(t, ns, "eureka-client", 2) {
			t.Logf("client pod %s in the ambient namespace: %v, labels %v", p.Name, containerNames(&p), p.Labels)
			if hasIstioProxy(&p) {
				t.Errorf("client pod %s has %s: meshrole took it out of ambient; containers: %v", p.Name, istioProxy, containerNames(&p))
			}
			if got, ok := p.Labels[policy.IstioInjectKey]; ok {
				t.Errorf("client pod %s: label %s = %q, want none set", p.Name, policy.IstioInjectKey, got)
			}
			if got, ok := p.Labels[policy.IstioDataplaneModeLabel]; ok {
				t.Errorf("client pod %s: label %s = %q, want none set (the namespace's ambient applies)", p.Name, policy.IstioDataplaneModeLabel, got)
			}
			if got := p.Annotations[policy.RoleAnnotation]; got != string(v1alpha1.RoleClientStateless) {
				t.Errorf("client pod %s: %s = %q: meshrole's verdict is missing", p.Name, policy.RoleAnnotation, got)
			}
		}
		if calls := e.istioCalls(t, ns, "eureka-client"); len(calls) > 0 {
			t.Errorf("Istio's injector was called %d times for eureka-client pods in the ambient namespace; want 0", len(calls))
		}

		// The same workload in a sidecar namespace: unchanged, it gets the sidecar.
		const sidecarNS = "sidecar-clients"
		e.meshNamespace(t, sidecarNS, "eureka", eurekaWorkloads()[1])
		e.create(t, deployment(sidecarNS, "eureka-client", 1, nil, nil, 8080))
		for _, p := range e.pods(t, sidecarNS, "eureka-client", 1) {
			if !hasIstioProxy(&p) {
				t.Errorf("client pod %s in the sidecar namespace has no %s; containers: %v", p.Name, istioProxy, containerNames(&p))
			}
			if got := p.Labels[policy.IstioInjectKey]; got != "true" {
				t.Errorf("client pod %s in the sidecar namespace: label %s = %q, want \"true\"", p.Name, policy.IstioInjectKey, got)
			}
		}
	})
}

// TestMeshroleAfterIstio registers meshrole's webhook configuration under a
// name that sorts after istio-sidecar-injector (zz-meshrole): the API server
// calls Istio first, so the peer gets the sidecar, and meshrole can only
// report it.
func TestMeshroleAfterIstio(t *testing.T) {
	const late = "zz-meshrole"
	e := startEnv(t, late, harness.ModeWebhook)

	t.Run("meshrole configured as zz-meshrole runs after istio-sidecar-injector: the peer gets the sidecar, meshrole warns and counts already-injected", func(t *testing.T) {
		const ns = "eureka-late"
		e.meshNamespace(t, ns, "eureka", eurekaWorkloads()...)

		// meshrole's ordering check runs at start-up, once its cache of
		// webhook configurations has synced; readiness does not wait for it.
		if got := e.waitForMetric(t, "meshrole_istio_injectors_before_meshrole", nil, 1, 10*time.Second); got != 1 {
			t.Errorf("meshrole_istio_injectors_before_meshrole = %v, want 1 (istio-sidecar-injector sorts before %s)", got, late)
		}
		before := e.metric(t, "meshrole_admissions_total", map[string]string{"outcome": "already-injected"})

		c, warnings, err := e.h.ClientWithWarnings()
		if err != nil {
			t.Fatal(err)
		}
		// A bare pod: the API server returns admission warnings to the
		// client that made the request, not for pods a controller creates.
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "eureka-server-0", Namespace: ns, Labels: map[string]string{"app": "eureka-server"}},
			Spec: corev1.PodSpec{
				ServiceAccountName: "default",
				Containers: []corev1.Container{{
					Name: "eureka-server", Image: "example.invalid/eureka-server:never-pulled",
				}},
			},
		}
		if err := c.Create(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
		msgs := warnings.Take()
		t.Logf("warnings: %q", msgs)

		var stored corev1.Pod
		if err := e.h.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: pod.Name}, &stored); err != nil {
			t.Fatal(err)
		}
		if !hasIstioProxy(&stored) {
			t.Errorf("pod %s has no %s: the failure did not reproduce; containers: %v", stored.Name, istioProxy, containerNames(&stored))
		}
		if got := stored.Labels[policy.IstioInjectKey]; got == "false" {
			t.Errorf("pod %s labelled %s=false although meshrole ran too late", stored.Name, policy.IstioInjectKey)
		}
		if _, ok := stored.Annotations[policy.RoleAnnotation]; ok {
			t.Errorf("pod %s carries %s: meshrole should change nothing on an injected pod", stored.Name, policy.RoleAnnotation)
		}
		if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, "already has Istio's sidecar") }) {
			t.Errorf("no \"already has Istio's sidecar\" warning; got %q", msgs)
		}
		after := e.metric(t, "meshrole_admissions_total", map[string]string{"outcome": "already-injected"})
		if after != before+1 {
			t.Errorf("meshrole_admissions_total{outcome=\"already-injected\"} went from %v to %v, want +1", before, after)
		}
		if calls := e.istioCalls(t, ns, "eureka-server"); len(calls) != 1 || !calls[0].Patched {
			t.Errorf("Istio's injector calls for the pod: %+v; want 1 with a patch", calls)
		}
	})
}

// TestNativeModeBeforeIstio runs the field report's scenario with meshrole in
// native mode: no meshrole webhook at all, its policies compiled into
// MutatingAdmissionPolicies, which the API server runs before every mutating
// webhook, Istio's injector included, whatever the configurations are named.
func TestNativeModeBeforeIstio(t *testing.T) {
	if version, ok := servesMutatingAdmissionPolicy(t); !ok {
		t.Run("before Kubernetes 1.36, the server refuses to start in native mode and names the version it needs", func(t *testing.T) {
			nativeModeRefused(t, version)
		})
		return
	}
	e := startEnv(t, harness.WebhookConfigurationName, harness.ModeNative)

	t.Run("no meshrole MutatingWebhookConfiguration; Istio's is the only one", func(t *testing.T) {
		var list admissionregistrationv1.MutatingWebhookConfigurationList
		if err := e.h.Client.List(t.Context(), &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 1 || list.Items[0].Name != injector.WebhookConfigurationName {
			names := make([]string, len(list.Items))
			for i := range list.Items {
				names[i] = list.Items[i].Name
			}
			t.Fatalf("mutating webhook configurations %v, want only %s", names, injector.WebhookConfigurationName)
		}
	})

	t.Run(seedPeersTitle, func(t *testing.T) { seedPeers(t, e) })

	t.Run(seedClientsTitle, func(t *testing.T) { seedClients(t, e) })
}

// eurekaWorkloads is the policy of examples/eureka.
func eurekaWorkloads() []v1alpha1.Workload {
	return []v1alpha1.Workload{{
		Name:     "eureka-peers",
		Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "eureka-server"}},
		Role:     v1alpha1.RolePeerStateful,
		Peer:     &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxySkip},
	}, {
		Name:     "eureka-clients",
		Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "eureka-client"}},
		Role:     v1alpha1.RoleClientStateless,
		Client:   &v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxyInject, ExcludeOutboundPorts: []v1alpha1.Port{8761}},
	}}
}

// checkClassicHold checks Istio's non-native form of
// holdApplicationUntilProxyStarts: istio-proxy first among the containers,
// with a postStart hook that waits for the proxy.
func checkClassicHold(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if len(p.Spec.Containers) == 0 || p.Spec.Containers[0].Name != istioProxy {
		t.Errorf("pod %s: istio-proxy is not the first container: %v", p.Name, containerNames(p))
		return
	}
	proxy := &p.Spec.Containers[0]
	if proxy.Lifecycle == nil || proxy.Lifecycle.PostStart == nil || proxy.Lifecycle.PostStart.Exec == nil ||
		!slices.Equal(proxy.Lifecycle.PostStart.Exec.Command, []string{"pilot-agent", "wait"}) {
		t.Errorf("pod %s: istio-proxy has no postStart `pilot-agent wait` hook: %+v", p.Name, proxy.Lifecycle)
	}
}

func selectorString(s *metav1.LabelSelector) string {
	if s == nil {
		return "<nil>"
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		return err.Error()
	}
	return sel.String()
}

func ptrString[T ~string](p *T) string {
	if p == nil {
		return "<nil>"
	}
	return string(*p)
}

// The field report's scenario, shared by webhook and native mode.
const (
	seedPeersTitle   = "eureka-server StatefulSet (peer-stateful, Skip) pods get no istio-proxy and no istio-init"
	seedClientsTitle = "eureka-client Deployment (client-stateless, excludeOutboundPorts 8761) pods get istio-proxy and istio-init excludes outbound 8761"
)

func seedPeers(t *testing.T, e *env) {
	const ns = "eureka"
	e.meshNamespace(t, ns, "eureka", eurekaWorkloads()...)
	// As the field report's chart: the template asks for the sidecar with
	// the label, which Istio reads before the annotation.
	e.create(t, statefulSet(ns, "eureka-server", 3, map[string]string{policy.IstioInjectKey: "true"}, nil, 8761))

	for _, p := range e.pods(t, ns, "eureka-server", 3) {
		for _, name := range []string{istioProxy, istioInit, istioValidation} {
			if c, _ := findContainer(&p, name); c != nil {
				t.Errorf("pod %s has %s; containers: %v", p.Name, name, containerNames(&p))
			}
		}
		if _, ok := p.Annotations[istioStatus]; ok {
			t.Errorf("pod %s carries %s: Istio injected it", p.Name, istioStatus)
		}
		if got := p.Labels[policy.IstioInjectKey]; got != "false" {
			t.Errorf("pod %s: label %s = %q, want \"false\"", p.Name, policy.IstioInjectKey, got)
		}
		if got := p.Annotations[policy.IstioInjectKey]; got != "false" {
			t.Errorf("pod %s: annotation %s = %q, want \"false\"", p.Name, policy.IstioInjectKey, got)
		}
		if got := p.Annotations[policy.RoleAnnotation]; got != string(v1alpha1.RolePeerStateful) {
			t.Errorf("pod %s: %s = %q", p.Name, policy.RoleAnnotation, got)
		}
	}
	// Istio's objectSelector (sidecar.istio.io/inject NotIn [false]) keeps
	// the API server from even calling its injector for these pods.
	if calls := e.istioCalls(t, ns, "eureka-server"); len(calls) > 0 {
		t.Errorf("Istio's injector was called %d times for eureka-server pods; want 0 (objectSelector)", len(calls))
	}
}

func seedClients(t *testing.T, e *env) {
	const ns = "eureka" // policy from the previous scenario
	if !e.namespaceExists(t, ns) {
		e.meshNamespace(t, ns, "eureka", eurekaWorkloads()...)
	}
	e.create(t, deployment(ns, "eureka-client", 2, nil, nil, 8080))

	for _, p := range e.pods(t, ns, "eureka-client", 2) {
		if !hasIstioProxy(&p) {
			t.Errorf("pod %s has no %s; containers: %v", p.Name, istioProxy, containerNames(&p))
			continue
		}
		if _, ok := p.Annotations[istioStatus]; !ok {
			t.Errorf("pod %s has no %s annotation", p.Name, istioStatus)
		}
		if got := p.Labels[policy.IstioInjectKey]; got != "true" {
			t.Errorf("pod %s: label %s = %q, want \"true\"", p.Name, policy.IstioInjectKey, got)
		}
		args := e.iptablesArgs(t, &p)
		t.Logf("pod %s: %v; istio-iptables args %q", p.Name, containerNames(&p), args)
		out, ok := flagValue(args, "-o")
		if !ok || !portsIn(out, "8761") {
			t.Errorf("pod %s: istio-iptables args %q do not exclude outbound port 8761 (-o)", p.Name, args)
		}
		if in, _ := flagValue(args, "-d"); portsIn(in, "8761") {
			t.Errorf("pod %s: 8761 excluded inbound too (-d %s); only outbound was asked", p.Name, in)
		}
		if got := p.Annotations[policy.IstioExcludeOutboundPorts]; !portsIn(got, "8761") {
			t.Errorf("pod %s: %s = %q", p.Name, policy.IstioExcludeOutboundPorts, got)
		}
	}
	if calls := e.istioCalls(t, ns, "eureka-client"); len(calls) != 2 || !calls[0].Patched || !calls[1].Patched {
		t.Errorf("Istio's injector calls for eureka-client pods: %+v; want 2, each with a patch", calls)
	}
}
