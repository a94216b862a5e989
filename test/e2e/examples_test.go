package e2e

import (
	"path/filepath"
	"testing"
	"time"
)

// expectedPods is what every pod a selector picks must carry after the
// example is applied: its Istio/meshrole labels and its whole annotations.
type expectedPods struct {
	selector    map[string]string
	count       int
	labels      map[string]string
	annotations map[string]string
}

// testExamples applies each of examples/*/ as a user would (kubectl apply -f
// examples/NAME/) and checks the pods the real controllers create.
func testExamples(t *testing.T) {
	// Each verdict's keys, for pods of policy <ns>/<policyName>, entry <entry>.
	trace := func(ns, policyName, entry, role string) map[string]string {
		return map[string]string{roleKey: role, policyKey: ns + "/" + policyName, workloadKey: entry}
	}
	skip := func(ns, policyName, entry string) expectedPods {
		return expectedPods{
			labels:      map[string]string{injectKey: "false", dataplaneKey: "none"},
			annotations: merge(trace(ns, policyName, entry, "peer-stateful"), map[string]string{injectKey: "false"}),
		}
	}
	bypass := func(ns, policyName, entry, ports string) expectedPods {
		return expectedPods{
			annotations: merge(trace(ns, policyName, entry, "peer-stateful"), map[string]string{excludeInKey: ports, excludeOutKey: ports}),
		}
	}
	inject := func(ns, policyName, entry string, extra map[string]string) expectedPods {
		return expectedPods{
			labels:      map[string]string{injectKey: "true"},
			annotations: merge(trace(ns, policyName, entry, "client-stateless"), map[string]string{injectKey: "true"}, extra),
		}
	}
	with := func(e expectedPods, selector map[string]string, count int) expectedPods {
		e.selector, e.count = selector, count
		return e
	}

	examples := []struct {
		dir  string
		pods []expectedPods
	}{
		{"eureka", []expectedPods{
			with(skip("ex-eureka", "eureka", "eureka-peers"), map[string]string{"app": "eureka-server"}, 3),
			with(inject("ex-eureka", "eureka", "eureka-clients", map[string]string{excludeOutKey: "8761"}), map[string]string{"app": "eureka-client"}, 2),
		}},
		{"zookeeper", []expectedPods{
			with(bypass("ex-zookeeper", "zookeeper", "ensemble", "2888,3888"), map[string]string{"app": "zookeeper"}, 3),
		}},
		{"kafka", []expectedPods{
			with(bypass("ex-kafka", "kafka", "brokers", "9093,9094"), map[string]string{"app": "kafka"}, 3),
			with(inject("ex-kafka", "kafka", "producers", map[string]string{"proxy.istio.io/config": "holdApplicationUntilProxyStarts: true\n"}),
				map[string]string{"app": "orders-producer"}, 1),
		}},
		{"nacos", []expectedPods{
			with(bypass("ex-nacos", "nacos", "cluster", "7848,9849"), map[string]string{"app": "nacos"}, 3),
			with(inject("ex-nacos", "nacos", "services", nil), map[string]string{"app": "user-service"}, 2),
		}},
		{"consul", []expectedPods{
			with(skip("ex-consul", "consul", "servers"), map[string]string{"app": "consul", "component": "server"}, 3),
			with(inject("ex-consul", "consul", "apps", nil), map[string]string{"app": "web"}, 1),
		}},
	}
	for _, ex := range examples {
		t.Run(ex.dir, func(t *testing.T) {
			ctx := scenario(t, 90*time.Second)
			ns := "ex-" + ex.dir
			if _, err := h.ApplyDir(ctx, filepath.Join(h.Root, "examples", ex.dir), ns); err != nil {
				t.Fatal(err)
			}
			for _, want := range ex.pods {
				for _, pod := range waitForPods(t, ctx, ns, want.selector, want.count) {
					expectPod(t, &pod, want.selector, want.labels, want.annotations)
				}
			}
		})
	}
}
