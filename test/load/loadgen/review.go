package loadgen

import (
	_ "embed"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// eurekaReview is pkg/mutate/testdata/eureka-server-from-statefulset.json:
// the AdmissionReview the API server sends for the seed's eureka-server pod.
//
//go:embed testdata/eureka-server-review.json
var eurekaReview []byte

// TypicalReview is the seed's eureka-server pod grown to a typical ~6 KB
// with what real pods carry (env, probes, resources, volumes, tolerations,
// annotations, managedFields), in an AdmissionReview for a CREATE in
// namespace (the fixture's "shop" when empty). Its pod is labelled
// app=eureka-server.
func TypicalReview(namespace string) ([]byte, error) {
	review, err := typicalReviewMap(namespace)
	if err != nil {
		return nil, err
	}
	return json.Marshal(review)
}

// TypicalPod is TypicalReview's pod, ready to be created in namespace: no
// owner references (the garbage collector would delete a pod whose owner
// does not exist) and no generateName.
func TypicalPod(namespace string) (*corev1.Pod, error) {
	review, err := typicalReviewMap(namespace)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(review["request"].(map[string]any)["object"])
	if err != nil {
		return nil, err
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(raw, pod); err != nil {
		return nil, err
	}
	pod.Namespace = namespace
	pod.OwnerReferences = nil
	pod.ManagedFields = nil
	pod.GenerateName = ""
	delete(pod.Labels, "statefulset.kubernetes.io/pod-name")
	delete(pod.Labels, "apps.kubernetes.io/pod-index")
	return pod, nil
}

// BaseReview is the seed's eureka-server review grown only by the env,
// probe and volumes every pod carries (~4.5 KB): the review of pkg/mutate's
// in-process BenchmarkAdmission.
func BaseReview(namespace string) ([]byte, error) {
	review, err := baseReviewMap(namespace)
	if err != nil {
		return nil, err
	}
	return json.Marshal(review)
}

func baseReviewMap(namespace string) (map[string]any, error) {
	var review map[string]any
	if err := json.Unmarshal(eurekaReview, &review); err != nil {
		return nil, fmt.Errorf("embedded review: %w", err)
	}
	req := review["request"].(map[string]any)
	pod := req["object"].(map[string]any)
	if namespace != "" {
		req["namespace"] = namespace
	}
	spec := pod["spec"].(map[string]any)
	container := spec["containers"].([]any)[0].(map[string]any)
	var env []any
	for i := range 40 {
		env = append(env, map[string]any{"name": fmt.Sprintf("EUREKA_SETTING_%02d", i), "value": fmt.Sprintf("value-of-setting-%02d", i)})
	}
	container["env"] = env
	container["readinessProbe"] = map[string]any{"httpGet": map[string]any{"path": "/actuator/health", "port": 8761}, "periodSeconds": 10}
	container["volumeMounts"] = []any{map[string]any{"name": "kube-api-access-abcde", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}}
	spec["volumes"] = []any{map[string]any{"name": "kube-api-access-abcde", "projected": map[string]any{"sources": []any{
		map[string]any{"serviceAccountToken": map[string]any{"path": "token", "expirationSeconds": 3607}},
		map[string]any{"configMap": map[string]any{"name": "kube-root-ca.crt", "items": []any{map[string]any{"key": "ca.crt", "path": "ca.crt"}}}},
	}}}}
	return review, nil
}

func typicalReviewMap(namespace string) (map[string]any, error) {
	review, err := baseReviewMap(namespace)
	if err != nil {
		return nil, err
	}
	pod := review["request"].(map[string]any)["object"].(map[string]any)
	spec := pod["spec"].(map[string]any)
	container := spec["containers"].([]any)[0].(map[string]any)
	// BaseReview is pkg/mutate's BenchmarkAdmission pod (~4.4 KB of
	// review). What the API server really sends for a StatefulSet's pod
	// also carries resources, a liveness probe, the tolerations the
	// DefaultTolerationSeconds plugin added, a few annotations and the
	// managedFields entry of the controller that created it: ~6 KB.
	container["resources"] = map[string]any{
		"requests": map[string]any{"cpu": "250m", "memory": "512Mi"},
		"limits":   map[string]any{"cpu": "1", "memory": "1Gi"},
	}
	container["livenessProbe"] = map[string]any{"httpGet": map[string]any{"path": "/actuator/health/liveness", "port": 8761, "scheme": "HTTP"},
		"initialDelaySeconds": 30, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
	container["securityContext"] = map[string]any{"allowPrivilegeEscalation": false, "runAsNonRoot": true, "runAsUser": 1000,
		"capabilities": map[string]any{"drop": []any{"ALL"}}}
	spec["tolerations"] = []any{
		map[string]any{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
		map[string]any{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
	}
	spec["serviceAccountName"] = "default"
	spec["hostname"] = "eureka-server-1"
	spec["subdomain"] = "eureka-server"
	meta := pod["metadata"].(map[string]any)
	meta["annotations"] = map[string]any{
		"prometheus.io/scrape": "true", "prometheus.io/port": "8761", "prometheus.io/path": "/actuator/prometheus",
		"kubectl.kubernetes.io/default-container": "eureka-server",
	}
	meta["managedFields"] = []any{map[string]any{
		"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:00Z",
		"fieldsType": "FieldsV1", "fieldsV1": managedFieldsV1,
	}}
	return review, nil
}

// managedFieldsV1 is the shape of the fields a StatefulSet controller owns on
// a pod it creates.
var managedFieldsV1 = map[string]any{
	"f:metadata": map[string]any{
		"f:annotations":     map[string]any{".": map[string]any{}, "f:kubectl.kubernetes.io/default-container": map[string]any{}, "f:prometheus.io/path": map[string]any{}, "f:prometheus.io/port": map[string]any{}, "f:prometheus.io/scrape": map[string]any{}},
		"f:generateName":    map[string]any{},
		"f:labels":          map[string]any{".": map[string]any{}, "f:app": map[string]any{}, "f:apps.kubernetes.io/pod-index": map[string]any{}, "f:controller-revision-hash": map[string]any{}, "f:statefulset.kubernetes.io/pod-name": map[string]any{}},
		"f:ownerReferences": map[string]any{".": map[string]any{}, `k:{"uid":"5b0e4a2c-1f1e-4c55-9a57-3c3b2f9d0c11"}`: map[string]any{}},
	},
	"f:spec": map[string]any{
		`f:containers`: map[string]any{`k:{"name":"eureka-server"}`: map[string]any{
			".": map[string]any{}, "f:env": map[string]any{".": map[string]any{}}, "f:image": map[string]any{}, "f:imagePullPolicy": map[string]any{},
			"f:livenessProbe": map[string]any{".": map[string]any{}, "f:failureThreshold": map[string]any{}, "f:httpGet": map[string]any{".": map[string]any{}, "f:path": map[string]any{}, "f:port": map[string]any{}, "f:scheme": map[string]any{}}},
			"f:name":          map[string]any{}, "f:ports": map[string]any{".": map[string]any{}, `k:{"containerPort":8761,"protocol":"TCP"}`: map[string]any{".": map[string]any{}, "f:containerPort": map[string]any{}, "f:protocol": map[string]any{}}},
			"f:readinessProbe":         map[string]any{".": map[string]any{}, "f:httpGet": map[string]any{".": map[string]any{}, "f:path": map[string]any{}, "f:port": map[string]any{}}},
			"f:resources":              map[string]any{".": map[string]any{}, "f:limits": map[string]any{".": map[string]any{}, "f:cpu": map[string]any{}, "f:memory": map[string]any{}}, "f:requests": map[string]any{".": map[string]any{}, "f:cpu": map[string]any{}, "f:memory": map[string]any{}}},
			"f:securityContext":        map[string]any{".": map[string]any{}, "f:allowPrivilegeEscalation": map[string]any{}, "f:capabilities": map[string]any{".": map[string]any{}, "f:drop": map[string]any{}}, "f:runAsNonRoot": map[string]any{}, "f:runAsUser": map[string]any{}},
			"f:terminationMessagePath": map[string]any{}, "f:terminationMessagePolicy": map[string]any{},
		}},
		"f:dnsPolicy": map[string]any{}, "f:enableServiceLinks": map[string]any{}, "f:hostname": map[string]any{}, "f:restartPolicy": map[string]any{},
		"f:schedulerName": map[string]any{}, "f:securityContext": map[string]any{}, "f:subdomain": map[string]any{}, "f:terminationGracePeriodSeconds": map[string]any{},
	},
}
