package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
)

const sampleOutput = `goos: linux
goarch: amd64
pkg: github.com/meshrole/meshrole/pkg/mutate
cpu: AMD EPYC
BenchmarkAdmission/floor-2     	   17798	     60000 ns/op	  73.18 MB/s	   27425 B/op	      71 allocs/op
BenchmarkAdmission/meshrole-2  	   12336	     90000 ns/op	  46.53 MB/s	   37803 B/op	     300 allocs/op
BenchmarkDecideNamespacePolicies/namespace=1-2         	 1000000	       300.0 ns/op	      80 B/op	       1 allocs/op
BenchmarkDecideNamespacePolicies/namespace=10-2        	  388668	       700.4 ns/op	      80 B/op	       1 allocs/op
BenchmarkDecideNamespacePolicies/namespace=100-2       	   40629	      7502 ns/op	      80 B/op	       1 allocs/op
BenchmarkDecideNamespacePolicies/namespace=1000-2      	    2203	     60000 ns/op	      80 B/op	       1 allocs/op
BenchmarkDecideClusterPolicies/cluster=10/selecting=0-2         	  134884	      1000 ns/op	      80 B/op	       1 allocs/op
BenchmarkDecideClusterPolicies/cluster=100/selecting=0-2        	   57513	      1100 ns/op	      80 B/op	       1 allocs/op
BenchmarkDecideClusterPolicies/cluster=1000/selecting=0-2       	   10000	      1100 ns/op	      80 B/op	       1 allocs/op
BenchmarkDecideClusterPolicies/cluster=5000/selecting=0-2       	    1474	      1300 ns/op	      80 B/op	       1 allocs/op
BenchmarkDecideClusterPolicies/cluster=10/selecting=5-2         	   50794	      4000 ns/op	    1664 B/op	      12 allocs/op
BenchmarkDecideClusterPolicies/cluster=100/selecting=50-2       	   16496	     12188 ns/op	    1664 B/op	      12 allocs/op
BenchmarkDecideClusterPolicies/cluster=1000/selecting=500-2     	    3709	     66776 ns/op	    1664 B/op	      12 allocs/op
BenchmarkDecideClusterPolicies/cluster=5000/selecting=2500-2    	     548	    400000 ns/op	    1664 B/op	      12 allocs/op
BenchmarkAdmission/floor-2     	   17798	     40000 ns/op	  73.18 MB/s	   27425 B/op	      71 allocs/op
BenchmarkAdmission/floor-2     	   17798	     50000 ns/op	  73.18 MB/s	   27425 B/op	      71 allocs/op
PASS
ok  	github.com/meshrole/meshrole/pkg/mutate	9.601s
`

func TestParseBenchOutput(t *testing.T) {
	stats := parseBenchOutput([]byte(sampleOutput))
	m, err := pickMicro(stats, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Floor.Runs != 3 || m.Floor.NsPerOp != 50000 || m.Floor.MBPerS != 73.18 || m.Floor.BPerOp != 27425 || m.Floor.Allocs != 71 {
		t.Errorf("floor: %+v", m.Floor)
	}
	if m.Meshrole.NsPerOp != 90000 {
		t.Errorf("meshrole %+v", m.Meshrole)
	}
	// namespace=1 must not be taken for namespace=10, 100 or 1000.
	if got := []float64{m.NamespacePolicies[0].NsPerOp, m.NamespacePolicies[3].NsPerOp}; got[0] != 300 || got[1] != 60000 || lastOverFirst(m.NamespacePolicies) != 200 {
		t.Errorf("namespace policies: %v", got)
	}
	if m.ClusterNone[clusterNoneTarget].NsPerOp != 1100 || m.ClusterNone[0].NsPerOp != 1000 || lastOverFirst(m.ClusterHalf) != 100 {
		t.Errorf("cluster policies: none %+v, half %+v", m.ClusterNone, m.ClusterHalf)
	}
	if _, err := pickMicro(parseBenchOutput([]byte(strings.ReplaceAll(sampleOutput, "namespace=100-", "namespace=101-"))), nil); err == nil ||
		!strings.Contains(err.Error(), "namespace=100 ") {
		t.Errorf("a missing benchmark: %v", err)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestTable(t *testing.T) {
	tb := &table{}
	tb.section("a section heading that is much longer than any figure")
	tb.info("context", "1.0 µs")
	tb.check("ratio", ratio(1.23), "≤ 1.50×", true)
	tb.check("throughput", rate(4321.4), "≥ 5,000/s", false)
	var b strings.Builder
	if err := tb.write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"FIGURE", "  ratio       1.23×", "4,321/s", "NOT MET", "met"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if m := tb.missed(); len(m) != 1 || m[0] != "throughput" {
		t.Errorf("missed = %v", m)
	}
}

func TestFormatting(t *testing.T) {
	for got, want := range map[string]string{
		thousands(0): "0", thousands(999): "999", thousands(1000): "1,000", thousands(1234567): "1,234,567",
		dur(1500 * time.Microsecond): "1.50 ms", dur(68 * time.Microsecond): "68.0 µs", dur(290): "290 ns",
		mib(64 << 20): "64.0 MiB",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestFloorHandler(t *testing.T) {
	h := &floorHandler{}
	body := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{}}}`
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, floorPath, strings.NewReader(body)))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"uid":"u-1"`) || !strings.Contains(rec.Body.String(), `"allowed":true`) {
		t.Errorf("HTTP %d: %s", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, floorPath, strings.NewReader("{")))
	if rec.Code != http.StatusBadRequest || h.served.Load() != 1 {
		t.Errorf("HTTP %d, served %d", rec.Code, h.served.Load())
	}

	patch := []byte(`[{"op":"add","path":"/metadata/labels/a","value":"b"}]`)
	h = &floorHandler{patch: patch}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, floorPatchPath, strings.NewReader(body)))
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil || string(out.Response.Patch) != string(patch) ||
		out.Response.PatchType == nil || *out.Response.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Errorf("with a patch: %v %s", err, rec.Body.String())
	}
}

func TestStatusQueueDepth(t *testing.T) {
	metrics := `# HELP workqueue_depth Current depth of workqueue by workqueue and priority
# TYPE workqueue_depth gauge
workqueue_depth{controller="clustermeshrolepolicy-status",name="clustermeshrolepolicy-status",priority="0"} 2
workqueue_depth{controller="meshrolepolicy-status",name="meshrolepolicy-status",priority="-100"} 6754
workqueue_depth{controller="meshrolepolicy-status",name="meshrolepolicy-status",priority="0"} 1
workqueue_depth{controller="native",name="native",priority="0"} 40
rest_client_requests_total{code="200",host="127.0.0.1:41973",method="PUT"} 4563
`
	depth, found, err := statusQueueDepth(metrics)
	if err != nil || !found || depth != 6757 {
		t.Errorf("depth %v, found %v, err %v; want 6757", depth, found, err)
	}
	if _, found, _ := statusQueueDepth("go_goroutines 104\n"); found {
		t.Error("found status queues in metrics without any")
	}
	if _, _, err := statusQueueDepth(`workqueue_depth{name="meshrolepolicy-status"} x` + "\n"); err == nil {
		t.Error("a malformed value was accepted")
	}
}

func TestRestWrites(t *testing.T) {
	metrics := `rest_client_requests_total{code="200",host="127.0.0.1:41973",method="GET"} 900
rest_client_requests_total{code="200",host="127.0.0.1:41973",method="PUT"} 4563
rest_client_requests_total{code="201",host="127.0.0.1:41973",method="POST"} 12
rest_client_requests_total{code="409",host="127.0.0.1:41973",method="PATCH"} 2
workqueue_depth{name="meshrolepolicy-status"} 7
`
	if got, err := restWrites(metrics); err != nil || got != 4577 {
		t.Errorf("restWrites = %v, %v; want 4577 (PUT, POST and PATCH, not GET)", got, err)
	}
	if _, err := restWrites(`rest_client_requests_total{method="PUT"} x` + "\n"); err == nil {
		t.Error("a malformed value was accepted")
	}
}

func TestParseLastGC(t *testing.T) {
	log := `2026-11-29T11:00:00Z	INFO	setup	starting
gc 1 @0.012s 3%: 0.010+1.2+0.003 ms clock, 0.021+0.4/1.1/0+0.007 ms cpu, 3->4->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P
gc 2 @0.050s 4%: 0.011+2.0+0.004 ms clock, 0.022+0.5/1.5/0+0.008 ms cpu, 7->8->5 MB, 9 MB goal, 0 MB stacks, 0 MB globals, 2 P
2026-11-29T11:00:01Z	INFO	controller	reconciled
gc 17 @31.234s 1%: 0.05+12+0.02 ms clock, 0.1+1.0/10/0+0.04 ms cpu, 60->61->29 MB, 62 MB goal, 0 MB stacks, 0 MB globals, 2 P (forced)
`
	g := parseLastGC(log)
	if !g.Observed || g.Number != 17 || g.LiveMiB != 29 || g.GoalMiB != 62 || !g.Forced || g.live() != 29<<20 {
		t.Errorf("last GC %+v, want collection 17, 29 MiB live, goal 62, forced", g)
	}
	g = parseLastGC(strings.Join(strings.Split(log, "\n")[:3], "\n"))
	if g.Number != 2 || g.LiveMiB != 5 || g.Forced {
		t.Errorf("last GC %+v, want collection 2, 5 MiB live, not forced", g)
	}
	if g := parseLastGC("no trace here\n"); g.Observed {
		t.Errorf("found a collection in %+v", g)
	}
}
