package harness

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func TestExampleManifestsDecodeInApplyOrder(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := ManifestFiles(filepath.Join(root, "examples", "eureka"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := ReadManifests(files...)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()] = applyOrder(o)
		if o.GetKind() != "Namespace" && o.GetNamespace() != "eureka" {
			t.Errorf("%s %s is in namespace %q, want eureka", o.GetKind(), o.GetName(), o.GetNamespace())
		}
	}
	for _, k := range []string{"Namespace", "MeshRolePolicy", "Service", "StatefulSet", "Deployment"} {
		if _, ok := kinds[k]; !ok {
			t.Errorf("examples/eureka has no %s", k)
		}
	}
	if kinds["Namespace"] >= kinds["MeshRolePolicy"] || kinds["MeshRolePolicy"] >= kinds["StatefulSet"] || kinds["MeshRolePolicy"] >= kinds["Deployment"] {
		t.Errorf("apply order %v: namespaces, then policies, then workloads", kinds)
	}
}

func TestDecodeYAMLSkipsEmptyDocuments(t *testing.T) {
	objs, err := DecodeYAML([]byte("---\n# comment only\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"))
	if err != nil || len(objs) != 1 || objs[0].GetName() != "a" {
		t.Fatalf("got %d objects, %v", len(objs), err)
	}
	if _, err := DecodeYAML([]byte("metadata: {name: a}\n")); err == nil {
		t.Fatal("a document without apiVersion/kind was accepted")
	}
}

func TestLabelsFor(t *testing.T) {
	for _, tc := range []struct {
		name string
		sel  metav1.LabelSelector
		ok   bool
	}{
		{"matchLabels", metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}}, true},
		{"In", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}}}}, true},
		{"Exists and NotIn", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "tier", Operator: metav1.LabelSelectorOpExists},
			{Key: "app", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"x"}},
		}}, true},
		{"contradiction", metav1.LabelSelector{
			MatchLabels:      map[string]string{"app": "a"},
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpDoesNotExist}},
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lbls, ok := labelsFor(tc.sel)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v (labels %v)", ok, tc.ok, lbls)
			}
			if ok {
				s, _ := metav1.LabelSelectorAsSelector(&tc.sel)
				if !s.Matches(labels.Set(lbls)) {
					t.Errorf("labels %v do not match %v", lbls, s)
				}
			}
		})
	}
}

func TestVerdictNames(t *testing.T) {
	ref := "ns/p"
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want bool
	}{
		{"winner", map[string]string{"meshrole.io/policy": ref, "meshrole.io/workload": "w", "meshrole.io/role": "peer-stateful"}, true},
		{"winner, other role", map[string]string{"meshrole.io/policy": ref, "meshrole.io/workload": "w", "meshrole.io/role": "client-stateless"}, false},
		{"conflict loser", map[string]string{"meshrole.io/policy": "cluster/c", "meshrole.io/conflict": "cluster/x/y=client-stateless,ns/p/w=peer-stateful"}, true},
		{"dry run", map[string]string{"meshrole.io/dry-run": `{"policy":"ns/p","workload":"w","role":"peer-stateful"}`}, true},
		{"nothing", nil, false},
	} {
		if got := verdictNames(tc.ann, ref, "w", "peer-stateful"); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNewWebhookSetsTheAddressesItChose(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		native bool
	}{
		{"webhook mode", []string{"--kubeconfig=k", "--webhook-port=9443", "--metrics-bind-address=:8080", "--leader-elect"}, false},
		{"native mode", []string{"--mode=native", "--kubeconfig=k", "--health-probe-bind-address=:8081", "--leader-elect"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := NewWebhook(WebhookProcess{Name: "meshrole test", Bin: "/bin/true", LogPath: filepath.Join(t.TempDir(), "log"), CertDir: "/certs", Args: tc.args})
			if err != nil {
				t.Fatal(err)
			}
			want := slices.DeleteFunc(slices.Clone(tc.args), func(a string) bool { return strings.Contains(a, "-port=") || strings.Contains(a, "-address=") })
			want = append(want,
				"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(w.ProbePort),
				"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(w.MetricsPort))
			if !tc.native {
				want = append(want, "--webhook-host=127.0.0.1", "--webhook-port="+strconv.Itoa(w.Port), "--cert-dir=/certs")
			}
			if got := w.Args(); !slices.Equal(got, want) {
				t.Errorf("args\n%q\nwant\n%q", got, want)
			}
			if w.Native != tc.native || (w.Port == 0) != tc.native || w.ProbePort == 0 || w.MetricsPort == 0 || w.ProbePort == w.MetricsPort {
				t.Errorf("native %v, ports %d %d %d", w.Native, w.Port, w.ProbePort, w.MetricsPort)
			}
		})
	}
}
