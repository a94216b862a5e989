package loadgen

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrole/meshrole/pkg/mutate"
)

// webhook answers reviews like a webhook would, then lets mangle spoil the
// answer.
func webhook(t *testing.T, mangle func(w http.ResponseWriter, review *admissionv1.AdmissionReview) bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "not a review", http.StatusBadRequest)
			return
		}
		jsonPatch := admissionv1.PatchTypeJSONPatch
		review.Response = &admissionv1.AdmissionResponse{
			UID: review.Request.UID, Allowed: true, Result: &metav1.Status{Code: http.StatusOK},
			PatchType: &jsonPatch, Patch: []byte(`[{"op":"add","path":"/metadata/annotations","value":{"a":"b"}}]`),
		}
		review.Request = nil
		if mangle != nil && mangle(w, &review) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(review)
	}))
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake errors are expected in some tests
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func options(srv *httptest.Server) Options {
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	return Options{URL: srv.URL + mutate.Path, RootCAs: roots, Workers: 4}
}

func TestRunCountsValidAnswers(t *testing.T) {
	srv := webhook(t, nil)
	for _, http1 := range []bool{false, true} {
		opts := options(srv)
		opts.Requests = 200
		opts.HTTP1 = http1
		opts.ExpectPatch = true
		opts.PID = os.Getpid()
		var seen atomic.Int64
		opts.OnResponse = func(s Sample) {
			if s.Err == nil && s.Response != nil && strings.Contains(string(s.Response.Patch), `"a":"b"`) {
				seen.Add(1)
			}
		}
		res, err := Run(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		want := "HTTP/2.0"
		if http1 {
			want = "HTTP/1.1"
		}
		if res.Requests != 200 || res.Errors != 0 || res.Patched != 200 || seen.Load() != 200 {
			t.Errorf("http1=%v: %d requests, %d errors, %d patched, %d seen; want 200, 0, 200, 200\n%s", http1, res.Requests, res.Errors, res.Patched, seen.Load(), res)
		}
		if res.Protocol != want {
			t.Errorf("http1=%v: protocol %q, want %q", http1, res.Protocol, want)
		}
		if res.Latency.P50 <= 0 || res.Latency.P50 > res.Latency.P99 || res.Latency.P99 > res.Latency.Max {
			t.Errorf("http1=%v: inconsistent latencies %+v", http1, res.Latency)
		}
		// HTTP/2: one connection for every worker. HTTP/1.1: about one
		// per worker.
		if (!http1 && res.Handshakes != 1) || res.Handshakes < 1 || len(res.ServerCertificates) != 1 {
			t.Errorf("http1=%v: %d handshakes, certificates %v", http1, res.Handshakes, res.ServerCertificates)
		}
		if res.ServerRSS <= 0 || res.Throughput <= 0 {
			t.Errorf("http1=%v: RSS %d, throughput %f", http1, res.ServerRSS, res.Throughput)
		}
	}
}

func TestRunCountsEachKindOfFailure(t *testing.T) {
	for _, tc := range []struct {
		kind   string
		mangle func(http.ResponseWriter, *admissionv1.AdmissionReview) bool
	}{
		{KindStatus, func(w http.ResponseWriter, _ *admissionv1.AdmissionReview) bool {
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
			return true
		}},
		{KindDecode, func(w http.ResponseWriter, _ *admissionv1.AdmissionReview) bool {
			_, _ = w.Write([]byte("{not json"))
			return true
		}},
		{KindDecode, func(_ http.ResponseWriter, r *admissionv1.AdmissionReview) bool {
			r.APIVersion = "admission.k8s.io/v1beta1"
			return false
		}},
		{KindDecode, func(_ http.ResponseWriter, r *admissionv1.AdmissionReview) bool {
			r.Response = nil
			return false
		}},
		{KindUID, func(_ http.ResponseWriter, r *admissionv1.AdmissionReview) bool {
			r.Response.UID = "someone-else"
			return false
		}},
		{KindDenied, func(_ http.ResponseWriter, r *admissionv1.AdmissionReview) bool {
			r.Response.Allowed = false
			r.Response.Result = &metav1.Status{Code: 500, Message: "boom"}
			return false
		}},
		{KindPatch, func(_ http.ResponseWriter, r *admissionv1.AdmissionReview) bool {
			r.Response.Patch = []byte(`{"op":"add"}`)
			return false
		}},
		{KindPatch, func(_ http.ResponseWriter, r *admissionv1.AdmissionReview) bool {
			r.Response.Patch, r.Response.PatchType = nil, nil // and ExpectPatch is set
			return false
		}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			opts := options(webhook(t, tc.mangle))
			opts.Requests = 20
			opts.ExpectPatch = true
			res, err := Run(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != 20 || res.Errors != 20 || res.ErrorKinds[tc.kind] != 20 || len(res.ErrorSamples) == 0 {
				t.Errorf("%d requests, %d errors, kinds %v, samples %q; want 20 requests, 20 %s errors",
					res.Requests, res.Errors, res.ErrorKinds, res.ErrorSamples, tc.kind)
			}
			if res.Throughput != 0 || res.Latency.P50 != 0 {
				t.Errorf("failures counted as throughput: %f/s, p50 %v", res.Throughput, res.Latency.P50)
			}
		})
	}
}

func TestRunCheckAndTransportFailures(t *testing.T) {
	opts := options(webhook(t, nil))
	opts.Requests = 10
	opts.Check = func(*admissionv1.AdmissionResponse) error { return errors.New("not what I wanted") }
	res, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.ErrorKinds[KindCheck] != 10 {
		t.Errorf("Check failures: %v", res.ErrorKinds)
	}

	// A server whose certificate the client does not trust.
	opts = options(webhook(t, nil))
	opts.RootCAs = x509.NewCertPool()
	opts.Requests = 5
	res, err = Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.ErrorKinds[KindTransport] != 5 {
		t.Errorf("untrusted certificate: %v %q", res.ErrorKinds, res.ErrorSamples)
	}
}

func TestRunIsBoundedByDuration(t *testing.T) {
	opts := options(webhook(t, nil))
	opts.Duration = 200 * time.Millisecond
	opts.Warmup = 50 * time.Millisecond
	res, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Errors != 0 {
		t.Errorf("%d requests, %d errors", res.Requests, res.Errors)
	}
}

func TestRunStopsWhenCancelled(t *testing.T) {
	srv := webhook(t, func(http.ResponseWriter, *admissionv1.AdmissionReview) bool {
		time.Sleep(20 * time.Millisecond)
		return false
	})
	opts := options(srv)
	opts.Duration = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	opts.OnResponse = func(Sample) { cancel() }
	res, err := Run(ctx, opts)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if res.Errors != 0 {
		t.Errorf("cancellation counted as %d errors: %v", res.Errors, res.ErrorSamples)
	}
}

func TestRunRefusesBadOptions(t *testing.T) {
	srv := webhook(t, nil)
	var hits atomic.Int64
	srv.Config.Handler = http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) })
	good := options(srv)
	good.Requests = 1
	for name, spoil := range map[string]func(*Options){
		"remote host":       func(o *Options) { o.URL = "https://example.com" + mutate.Path },
		"remote IP":         func(o *Options) { o.URL = "https://10.0.0.1:9443" + mutate.Path },
		"plain http":        func(o *Options) { o.URL = strings.Replace(o.URL, "https://", "http://", 1) },
		"user info":         func(o *Options) { o.URL = strings.Replace(o.URL, "https://", "https://u:p@", 1) },
		"unbounded":         func(o *Options) { o.Requests, o.Duration = 0, 0 },
		"negative":          func(o *Options) { o.Duration = -time.Second },
		"not a review":      func(o *Options) { o.Body = []byte(`{"kind":"Pod","apiVersion":"v1"}`) },
		"review no request": func(o *Options) { o.Body = []byte(`{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}`) },
	} {
		opts := good
		spoil(&opts)
		if _, err := Run(context.Background(), opts); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("refused options still sent %d requests", hits.Load())
	}
}

func TestLoopbackOnlyDialer(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:443": true, "127.1.2.3:443": true, "[::1]:443": true,
		"10.0.0.1:443": false, "[2001:db8::1]:443": false, "192.168.1.1:9443": false,
	} {
		if err := loopbackOnly("tcp", addr, nil); (err == nil) != ok {
			t.Errorf("%s: err = %v", addr, err)
		}
	}
}

func TestTypicalReview(t *testing.T) {
	body, err := TypicalReview("bench")
	if err != nil {
		t.Fatal(err)
	}
	if len(body) < 5000 || len(body) > 8000 {
		t.Errorf("review is %d bytes, want ~6 KB", len(body))
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		t.Fatalf("not a review: %v", err)
	}
	if review.Request.Namespace != "bench" || review.Request.Operation != admissionv1.Create {
		t.Errorf("namespace %q, operation %q", review.Request.Namespace, review.Request.Operation)
	}
	tmpl, err := newTemplate(body)
	if err != nil {
		t.Fatal(err)
	}
	a, uidA := tmpl.request(1, 1)
	b, uidB := tmpl.request(1, 2)
	if uidA == uidB || len(a) != len(b) || !strings.Contains(string(a), `"uid":"`+uidA+`"`) {
		t.Errorf("uids %q %q not placed", uidA, uidB)
	}

	pod, err := TypicalPod("bench")
	if err != nil {
		t.Fatal(err)
	}
	if pod.Namespace != "bench" || len(pod.OwnerReferences) != 0 || pod.Labels["app"] != "eureka-server" || len(pod.Spec.Containers[0].Env) != 40 {
		t.Errorf("pod: %+v", pod.ObjectMeta)
	}
}

func TestParseStatCPU(t *testing.T) {
	line := []byte("1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 1000 10 18446744073709551615\n")
	got, err := parseStatCPU(line)
	if err != nil || got != 3*time.Second {
		t.Errorf("got %v, %v; want 3s", got, err)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Error("no error for garbage")
	}
}

func TestPercentile(t *testing.T) {
	var l []time.Duration
	for i := 1; i <= 100; i++ {
		l = append(l, time.Duration(i))
	}
	for p, want := range map[float64]time.Duration{50: 50, 95: 95, 99: 99, 100: 100, 1: 1} {
		if got := Percentile(l, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
}

// counting is a webhook that counts the requests it answers.
func counting(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	srv := webhook(t, func(http.ResponseWriter, *admissionv1.AdmissionReview) bool {
		hits.Add(1)
		return false
	})
	return srv, &hits
}

// targetOptions are options spreading the load over srvs.
func targetOptions(t *testing.T, srvs ...*httptest.Server) Options {
	t.Helper()
	roots := x509.NewCertPool()
	var urls []string
	for _, s := range srvs {
		roots.AddCert(s.Certificate())
		urls = append(urls, s.URL+mutate.Path)
	}
	targets, err := NewTargets(urls...)
	if err != nil {
		t.Fatal(err)
	}
	return Options{Targets: targets, RootCAs: roots, Workers: 4}
}

func TestTargetsSpreadRoundRobin(t *testing.T) {
	a, hitsA := counting(t)
	b, hitsB := counting(t)
	for _, http1 := range []bool{false, true} {
		hitsA.Store(0)
		hitsB.Store(0)
		opts := targetOptions(t, a, b)
		opts.Requests = 200
		opts.HTTP1 = http1
		opts.ExpectPatch = true
		var sampled sync.Map
		opts.OnResponse = func(s Sample) {
			n, _ := sampled.LoadOrStore(s.URL, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
		}
		res, err := Run(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		ua, ub := a.URL+mutate.Path, b.URL+mutate.Path
		if res.Requests != 200 || res.Errors != 0 || res.ByURL[ua].Requests != 100 || res.ByURL[ub].Requests != 100 || len(res.ByURL) != 2 {
			t.Errorf("http1=%v: %d requests, %d errors, by URL %v; want 100 each, no errors\n%s", http1, res.Requests, res.Errors, res.ByURL, res)
		}
		for u, srvHits := range map[string]*atomic.Int64{ua: hitsA, ub: hitsB} {
			n, _ := sampled.Load(u)
			// The servers also answered the unmeasured first request of each target.
			if n == nil || n.(*atomic.Int64).Load() != 100 || srvHits.Load() != 101 {
				t.Errorf("http1=%v: %s: samples %v, server answered %d; want 100 and 101", http1, u, n, srvHits.Load())
			}
		}
		if !strings.Contains(res.String(), "target        "+ua+": 100 requests (0 errors)") {
			t.Errorf("report does not list the targets:\n%s", res)
		}
	}
}

func TestTargetsRemoveDuringRun(t *testing.T) {
	a, _ := counting(t)
	b, hitsB := counting(t)
	opts := targetOptions(t, a, b)
	ub := b.URL + mutate.Path
	opts.Requests = 400
	var seen atomic.Int64
	var atRemoval atomic.Int64
	atRemoval.Store(-1)
	opts.OnResponse = func(Sample) {
		if seen.Add(1) == 100 {
			if err := opts.Targets.Remove(ub); err != nil {
				t.Error(err)
			}
			atRemoval.Store(hitsB.Load())
		}
	}
	res, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 400 || res.Errors != 0 {
		t.Fatalf("%d requests, %d errors: %v", res.Requests, res.Errors, res.ErrorSamples)
	}
	// After the removal, B only gets what the workers had already picked
	// for it: at most one request each.
	if got, before := hitsB.Load(), atRemoval.Load(); before < 0 || got > before+int64(opts.Workers) {
		t.Errorf("B answered %d requests in all, %d when it was removed: more than %d after", got, before, opts.Workers)
	}
	if res.ByURL[ub].Requests == 0 || res.ByURL[ub].Requests > 60 || res.ByURL[a.URL+mutate.Path].Requests < 340 {
		t.Errorf("by URL %v: want ~50 to B, the rest to A", res.ByURL)
	}
	if got := opts.Targets.URLs(); len(got) != 1 || got[0] != a.URL+mutate.Path {
		t.Errorf("targets after the removal: %v", got)
	}
}

func TestTargetsRefuseBadURLs(t *testing.T) {
	for name, urls := range map[string][]string{
		"none":      nil,
		"remote":    {"https://127.0.0.1:9443/x", "https://10.0.0.1:9443/x"},
		"plain":     {"http://127.0.0.1:9443/x"},
		"duplicate": {"https://127.0.0.1:9443/x", "https://127.0.0.1:9443/x"},
	} {
		if _, err := NewTargets(urls...); err == nil {
			t.Errorf("%s: NewTargets(%q) accepted", name, urls)
		}
	}
	targets, err := NewTargets("https://127.0.0.1:1/x", "https://[::1]:1/x")
	if err != nil {
		t.Fatal(err)
	}
	if err := targets.Remove("https://127.0.0.1:2/x"); err == nil {
		t.Error("removed a URL that is not a target")
	}
	if err := targets.Remove("https://127.0.0.1:1/x"); err != nil {
		t.Error(err)
	}
	if err := targets.Remove("https://[::1]:1/x"); err == nil {
		t.Error("removed the last target")
	}

	srv := webhook(t, nil)
	opts := options(srv)
	opts.Requests = 1
	opts.Targets = targets
	if _, err := Run(context.Background(), opts); err == nil {
		t.Error("Run accepted both URL and Targets")
	}
	opts.URL, opts.Targets = "", &Targets{}
	if _, err := Run(context.Background(), opts); err == nil {
		t.Error("Run accepted empty Targets")
	}
}
