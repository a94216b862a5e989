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
BenchmarkDecidePolicyCount/policies=10/namespaces=1-2         	 3160587	       373.9 ns/op	     128 B/op	       2 allocs/op
BenchmarkDecidePolicyCount/policies=10000/namespaces=1000-2   	 3302346	       358.3 ns/op	     128 B/op	       2 allocs/op
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
	if m.Meshrole.NsPerOp != 90000 || m.Policies10.NsPerOp != 373.9 || m.Policies10k.NsPerOp != 358.3 {
		t.Errorf("meshrole %+v, 10 %+v, 10k %+v", m.Meshrole, m.Policies10, m.Policies10k)
	}
	if _, err := find(stats, "BenchmarkAdmission/"); err == nil {
		t.Error("an ambiguous name was accepted")
	}
	if _, err := find(stats, "nothing"); err == nil {
		t.Error("a missing benchmark was accepted")
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
