package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/certs"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/harness"
	"github.com/meshrole/meshrole/test/load/loadgen"
)

// allPeersPolicy makes every pod of its namespace peer-stateful.
const allPeersPolicy = `
apiVersion: meshrole.io/v1alpha1
kind: MeshRolePolicy
metadata: {name: peers}
spec:
  workloads:
  - name: all-peers
    selector: {}
    role: peer-stateful
`

func webhookAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(h.Webhook.Port))
}

// servedCert returns the certificate the webhook presents now.
func servedCert(t *testing.T, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", webhookAddr(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS to the webhook: %v", err)
	}
	defer func() { _ = conn.Close() }()
	return conn.ConnectionState().PeerCertificates[0]
}

// restoreSuiteCertificate puts the suite's own serving certificate back in
// the webhook's cert dir and waits until it is served: the harness restarts
// the webhook trusting only the suite's CA.
func restoreSuiteCertificate(t *testing.T, roots *x509.CertPool) {
	t.Helper()
	if err := h.Certs.Write(h.CertDir); err != nil {
		t.Error(err)
		return
	}
	for deadline := time.Now().Add(30 * time.Second); !servedCert(t, roots).Equal(h.Certs.Cert); {
		if time.Now().After(deadline) {
			t.Error("the suite's certificate was not served again")
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testTLSVersions: the webhook port speaks TLS 1.2 and 1.3 only.
func testTLSVersions(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		conn, err := tls.Dial("tcp", webhookAddr(), &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v}) //nolint:gosec // probing that old versions are refused
		if err == nil {
			_ = conn.Close()
			t.Errorf("the webhook accepted %s", tls.VersionName(v))
		}
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		conn, err := tls.Dial("tcp", webhookAddr(), &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v}) //nolint:gosec // only the version matters here
		if err != nil {
			t.Errorf("%s refused: %v", tls.VersionName(v), err)
			continue
		}
		_ = conn.Close()
	}
}

// testNamespaceIsolation: a MeshRolePolicy in one namespace never decides
// for pods in another, even one where meshrole is enabled.
func testNamespaceIsolation(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	const a, b = "e2e-isolation-a", "e2e-isolation-b"
	createNamespace(t, ctx, a, true, nil)
	createNamespace(t, ctx, b, true, nil)
	applyYAML(t, ctx, a, allPeersPolicy)
	inA := newPod(a, "x", map[string]string{"app": "x"}, nil)
	inB := newPod(b, "x", map[string]string{"app": "x"}, nil)
	for _, p := range []*corev1.Pod{inA, inB} {
		if err := h.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if inA.Annotations[roleKey] != "peer-stateful" {
		t.Errorf("pod in %s: annotations %v, want the policy's verdict", a, inA.Annotations)
	}
	if got := meshKeys(merge(inB.Labels, inB.Annotations)); len(got) != 0 {
		t.Errorf("a policy in %s changed a pod in %s: %v", a, b, got)
	}
}

// testCertificateRotation: new serving certificate files in --cert-dir are
// served without a restart, and the API server keeps calling the webhook.
func testCertificateRotation(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	next, err := certs.Generate(certs.Options{Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	// As with cert-manager's CA injection, the bundle trusts both CAs while
	// the serving certificate changes.
	var config admissionregistrationv1.MutatingWebhookConfiguration
	if err := h.Client.Get(ctx, client.ObjectKey{Name: harness.WebhookConfigurationName}, &config); err != nil {
		t.Fatal(err)
	}
	oldCA := config.Webhooks[0].ClientConfig.CABundle
	config.Webhooks[0].ClientConfig.CABundle = append(bytes.Clone(oldCA), next.CAPEM...)
	if err := h.Client.Update(ctx, &config); err != nil {
		t.Fatal(err)
	}

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(oldCA)
	roots.AppendCertsFromPEM(next.CAPEM)
	before := servedCert(t, roots)
	if err := next.Write(h.CertDir); err != nil {
		t.Fatal(err)
	}
	// Put the suite's own certificate back afterwards (the harness restarts
	// the webhook trusting only its CA), and rotate it once more doing so.
	t.Cleanup(func() {
		restoreSuiteCertificate(t, roots)
		if err := h.Client.Get(ctx, client.ObjectKey{Name: harness.WebhookConfigurationName}, &config); err == nil {
			config.Webhooks[0].ClientConfig.CABundle = oldCA
			if err := h.Client.Update(ctx, &config); err != nil {
				t.Error(err)
			}
		}
	})
	start := time.Now()
	for !servedCert(t, roots).Equal(next.Cert) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("still serving %s 30s after rotation", before.SerialNumber)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("new certificate served %s after the files changed, without a restart", time.Since(start).Round(time.Millisecond))

	const ns = "e2e-rotation"
	createNamespace(t, ctx, ns, true, nil)
	applyYAML(t, ctx, ns, allPeersPolicy)
	pod := newPod(ns, "after-rotation", map[string]string{"app": "x"}, nil)
	if err := h.Client.Create(ctx, pod); err != nil {
		t.Fatalf("pod creation after rotation: %v", err)
	}
	if pod.Annotations[roleKey] != "peer-stateful" {
		t.Errorf("pod after rotation: annotations %v", pod.Annotations)
	}
}

// testRotationUnderLoad: the serving certificate files change while
// admissions keep arriving, each on a new TLS connection: none fails, and
// both certificates are seen.
func testRotationUnderLoad(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	next, err := certs.Generate(certs.Options{Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.Certs.CAPEM)
	roots.AppendCertsFromPEM(next.CAPEM)
	t.Cleanup(func() {
		restoreSuiteCertificate(t, roots)
	})

	body := loadNamespace(t, ctx, "e2e-rotation-load", allPeersPolicy)
	load := startLoad(ctx, loadgen.Options{
		RootCAs: roots, HTTP1: true, DisableKeepAlives: true, Workers: 2, Duration: 3 * time.Second, Body: body, ExpectPatch: true,
	})
	time.Sleep(time.Second)
	if err := next.Write(h.CertDir); err != nil {
		t.Fatal(err)
	}
	result := load.wait(t)
	t.Logf("%d admissions during the rotation, %d failed, %d handshakes, certificates served: %v",
		result.Requests, result.Errors, result.Handshakes, result.ServerCertificates)
	if result.Requests == 0 || result.Errors != 0 {
		t.Fatalf("%d requests, %d failed: %v %v", result.Requests, result.Errors, result.ErrorKinds, result.ErrorSamples)
	}
	serial := func(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }
	if !slices.Contains(result.ServerCertificates, serial(h.Certs.Cert)) || !slices.Contains(result.ServerCertificates, serial(next.Cert)) {
		t.Errorf("served certificates %v, want both %s (before) and %s (after)", result.ServerCertificates, serial(h.Certs.Cert), serial(next.Cert))
	}
}

// testPolicyChurnUnderLoad: 1,000 policy changes — creates, updates that
// move a priority, deletes; update conflicts are retried, so every change is
// applied — while admissions keep arriving. Every answer must be exactly the
// verdict of one state the namespace's policies went through (see
// churnTimeline.place), so empty only where no policy existed; and patched
// answers, from several winners, must have come while the changes were made.
func testPolicyChurnUnderLoad(t *testing.T) {
	ctx := scenario(t, 150*time.Second)
	const ns, churn, names = "e2e-churn", 1000, 50
	body := loadNamespace(t, ctx, ns, "")
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		t.Fatal(err)
	}
	podJSON := review.Request.Object.Raw

	// Every answer, with when its request was sent and answered. The load
	// runs until the churn is over (bounded at 100 s).
	var mu sync.Mutex
	var samples []loadgen.Sample
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	load := startLoad(loadCtx, loadgen.Options{
		Workers: 2, Duration: 100 * time.Second, Body: body,
		OnResponse: func(s loadgen.Sample) {
			mu.Lock()
			samples = append(samples, s)
			mu.Unlock()
		},
	})

	tl := newChurnTimeline(ns)
	priorities := map[int]int32{} // the policies that exist, by n: p-<n>
	var creates, updates, deletes, conflicts int
	for i := range churn {
		n := i % names
		key := client.ObjectKey{Namespace: ns, Name: churnPolicyName(n)}
		switch (i / names) % 3 {
		case 0:
			p := &v1alpha1.MeshRolePolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key.Name},
				Spec: v1alpha1.PolicySpec{Priority: int32(n % 7), Workloads: []v1alpha1.Workload{
					{Name: "all", Role: churnRole(n), Selector: metav1.LabelSelector{}},
				}},
			}
			sent := time.Now()
			if err := h.Client.Create(ctx, p); err != nil {
				t.Fatalf("change %d, creating %s: %v", i, key, err)
			}
			priorities[n] = p.Spec.Priority
			tl.record(sent, priorities)
			creates++
		case 1:
			// An update that keeps the name but moves the priority; the
			// server writing the policy's status in between is a conflict,
			// and the update is tried again on what the server holds.
			for attempt := 1; ; attempt++ {
				var cur v1alpha1.MeshRolePolicy
				if err := h.Client.Get(ctx, key, &cur); err != nil {
					t.Fatalf("change %d, reading %s: %v", i, key, err)
				}
				if cur.Spec.Priority != priorities[n] {
					t.Fatalf("change %d: %s has priority %d, the test set %d", i, key, cur.Spec.Priority, priorities[n])
				}
				generation := cur.Generation
				cur.Spec.Priority = (cur.Spec.Priority + 1 + int32(i%10)) % 11
				sent := time.Now()
				err := h.Client.Update(ctx, &cur)
				if err == nil {
					if cur.Generation != generation+1 {
						t.Fatalf("change %d: updating %s left its generation at %d", i, key, cur.Generation)
					}
					priorities[n] = cur.Spec.Priority
					tl.record(sent, priorities)
					updates++
					break
				}
				if !apierrors.IsConflict(err) || attempt == 20 {
					t.Fatalf("change %d, updating %s (attempt %d): %v", i, key, attempt, err)
				}
				conflicts++
			}
		default:
			p := &v1alpha1.MeshRolePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key.Name}}
			sent := time.Now()
			if err := h.Client.Delete(ctx, p); err != nil {
				t.Fatalf("change %d, deleting %s: %v", i, key, err)
			}
			delete(priorities, n)
			tl.record(sent, priorities)
			deletes++
		}
	}
	changes := tl.returned[len(tl.returned)-1].Sub(tl.sent[0])
	stopLoad()
	result := load.wait(t)

	// What the API server holds at the end is what the changes made.
	var held v1alpha1.MeshRolePolicyList
	if err := h.Client.List(ctx, &held, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	got := map[int]int32{}
	for _, p := range held.Items {
		var n int
		if _, err := fmt.Sscanf(p.Name, "p-%d", &n); err != nil {
			t.Fatalf("policy %s in %s: %v", p.Name, ns, err)
		}
		got[n] = p.Spec.Priority
	}
	if !maps.Equal(got, priorities) {
		t.Errorf("the API server holds the policies %v (n: priority), the changes made %v", got, priorities)
	}
	applied := creates + updates + deletes
	if applied != churn || len(tl.sent) != churn {
		t.Errorf("%d changes applied (%d recorded), want %d", applied, len(tl.sent), churn)
	}

	// Each worker's answers, in order, against the timeline.
	byWorker := map[int][]loadgen.Sample{}
	for _, s := range samples {
		byWorker[s.Worker] = append(byWorker[s.Worker], s)
	}
	var patched, patchedDuringChanges, empty, withConflict int
	var wrong []string
	seen := map[churnVerdict]bool{}
	for w, ss := range byWorker {
		slices.SortFunc(ss, func(a, b loadgen.Sample) int { return a.Start.Compare(b.Start) })
		state := 0
		for _, s := range ss {
			if s.Err != nil || s.Response == nil {
				continue // counted in result.Errors
			}
			end := s.Start.Add(s.Latency)
			v, err := churnVerdictOf(ns, podJSON, s.Response)
			if err == nil {
				var ok bool
				if state, ok = tl.place(v, state, s.Start, end); !ok {
					err = fmt.Errorf("no state the worker could have seen has this verdict (%s)", tl.around(s.Start, end))
				}
			}
			if err != nil {
				wrong = append(wrong, fmt.Sprintf("worker %d, request sent %v into the changes, answered %v later: %s: %v",
					w, s.Start.Sub(tl.sent[0]).Round(time.Microsecond), s.Latency.Round(time.Microsecond), v, err))
				continue
			}
			seen[v] = true
			if v.policy == "" {
				empty++
				continue
			}
			patched++
			if !s.Start.Before(tl.sent[0]) && !end.After(tl.returned[len(tl.returned)-1]) {
				patchedDuringChanges++
			}
			if v.conflict != "" {
				withConflict++
			}
		}
	}
	t.Logf("%d policy changes applied in %s (%d creates, %d updates, %d deletes; %d update conflicts retried); "+
		"%d admissions answered: %d patched (%d during the changes, %d with a conflict), %d empty; %d distinct verdicts; %d failed",
		applied, changes.Round(time.Millisecond), creates, updates, deletes, conflicts,
		result.Requests, patched, patchedDuringChanges, withConflict, empty, len(seen), result.Errors)
	if result.Requests == 0 || result.Errors != 0 {
		t.Fatalf("%d admissions, %d failed: %v %v", result.Requests, result.Errors, result.ErrorKinds, result.ErrorSamples)
	}
	if len(wrong) > 0 {
		t.Errorf("%d of %d answers are not one state's verdict; the first:\n%s", len(wrong), result.Requests, strings.Join(wrong[:min(len(wrong), 10)], "\n"))
	}
	// The answers followed the churn: patched ones came while the policies
	// changed, from more than one winner.
	if patchedDuringChanges == 0 || len(seen) < 3 {
		t.Errorf("%d patched answers during the changes, %d distinct verdicts: the load did not see the churn", patchedDuringChanges, len(seen))
	}
}

// maxViewLag bounds how long after a change returned the webhook may still
// answer from the state before it (its informer's delay, on a busy machine).
const maxViewLag = 5 * time.Second

func churnPolicyName(n int) string { return fmt.Sprintf("p-%d", n) }

// churnRole: policies p-<n> with an even n make peers, odd n clients.
func churnRole(n int) v1alpha1.Role {
	if n%2 == 0 {
		return v1alpha1.RolePeerStateful
	}
	return v1alpha1.RoleClientStateless
}

// churnVerdict is what a pod of the churn namespace gets from one state of
// its policies (all of whose single entries, "all", select every pod): the
// winning policy and its role, and the entries of another role it tied with
// on priority (meshrole.io/conflict, its parts sorted). The zero value is no
// verdict: no policy exists.
type churnVerdict struct {
	policy, role, conflict string
}

func (v churnVerdict) String() string {
	if v.policy == "" {
		return "no verdict"
	}
	if v.conflict == "" {
		return v.policy + " " + v.role
	}
	return v.policy + " " + v.role + " (conflict " + v.conflict + ")"
}

// verdictFor is the precedence of docs/design.md, "Precedence", over the policies (p-<n> by n, with their
// priorities): the highest priority wins, then the name, alphabetically;
// entries of another role at the winner's priority are a conflict.
func verdictFor(ns string, priorities map[int]int32) churnVerdict {
	winner := -1
	for n, prio := range priorities {
		if winner < 0 || prio > priorities[winner] || (prio == priorities[winner] && churnPolicyName(n) < churnPolicyName(winner)) {
			winner = n
		}
	}
	if winner < 0 {
		return churnVerdict{}
	}
	var conflicts []string
	for n, prio := range priorities {
		if prio == priorities[winner] && churnRole(n) != churnRole(winner) {
			conflicts = append(conflicts, fmt.Sprintf("%s/%s/all=%s", ns, churnPolicyName(n), churnRole(n)))
		}
	}
	slices.Sort(conflicts)
	return churnVerdict{policy: ns + "/" + churnPolicyName(winner), role: string(churnRole(winner)), conflict: strings.Join(conflicts, ",")}
}

// keys are the Istio and meshrole labels and annotations the verdict writes
// on a pod that has none.
func (v churnVerdict) keys() (lbls, annotations map[string]string) {
	if v.policy == "" {
		return map[string]string{}, map[string]string{}
	}
	inject := "true"
	lbls = map[string]string{injectKey: inject}
	if v.role == string(v1alpha1.RolePeerStateful) {
		inject = "false"
		lbls = map[string]string{injectKey: inject, dataplaneKey: "none"}
	}
	annotations = map[string]string{injectKey: inject, roleKey: v.role, policyKey: v.policy, workloadKey: "all"}
	if v.conflict != "" {
		annotations[conflictKey] = v.conflict
	}
	return lbls, annotations
}

// churnVerdictOf applies an answer's patch to the reviewed pod and reads the
// verdict it wrote, which must be whole: exactly the keys that verdict
// writes, nothing of another.
func churnVerdictOf(ns string, podJSON []byte, resp *admissionv1.AdmissionResponse) (churnVerdict, error) {
	patched := podJSON
	if len(resp.Patch) > 0 {
		p, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			return churnVerdict{}, fmt.Errorf("patch %s: %w", resp.Patch, err)
		}
		if patched, err = p.Apply(podJSON); err != nil {
			return churnVerdict{}, fmt.Errorf("patch %s: %w", resp.Patch, err)
		}
	}
	var pod corev1.Pod
	if err := json.Unmarshal(patched, &pod); err != nil {
		return churnVerdict{}, err
	}
	gotLabels, gotAnnotations := meshKeys(pod.Labels), meshKeys(pod.Annotations)
	if c, ok := gotAnnotations[conflictKey]; ok {
		parts := strings.Split(c, ",")
		slices.Sort(parts)
		gotAnnotations[conflictKey] = strings.Join(parts, ",")
	}
	v := churnVerdict{policy: gotAnnotations[policyKey], role: gotAnnotations[roleKey], conflict: gotAnnotations[conflictKey]}
	wantLabels, wantAnnotations := v.keys()
	if d := diff(gotLabels, wantLabels) + diff(gotAnnotations, wantAnnotations); d != "" {
		return v, fmt.Errorf("not one whole verdict (-got +want):\n%s(patch %s)", d, resp.Patch)
	}
	return v, nil
}

// churnTimeline is the states a namespace's policies went through:
// verdicts[0] before the first change, verdicts[k+1] after change k, which
// was sent at sent[k] and returned at returned[k]. Changes are made one after
// the other.
type churnTimeline struct {
	ns             string
	verdicts       []churnVerdict
	sent, returned []time.Time
}

func newChurnTimeline(ns string) *churnTimeline {
	return &churnTimeline{ns: ns, verdicts: []churnVerdict{{}}}
}

// record adds a change sent at sent that has just returned, after which the
// policies have priorities.
func (tl *churnTimeline) record(sent time.Time, priorities map[int]int32) {
	tl.returned = append(tl.returned, time.Now())
	tl.sent = append(tl.sent, sent)
	tl.verdicts = append(tl.verdicts, verdictFor(tl.ns, priorities))
}

// place finds the first state from state on whose verdict is v among those
// an answer to a request sent at start and answered at end can come from: no
// state whose change was sent after end; none superseded by a change that
// returned more than maxViewLag before start; and, for the answers of one
// worker (one request at a time), none before the state of its previous
// answer, since the webhook's view of the policies only moves forward. ok is
// false when there is none.
func (tl *churnTimeline) place(v churnVerdict, state int, start, end time.Time) (int, bool) {
	first, last := tl.window(start, end)
	for j := max(first, state); j <= last; j++ {
		if tl.verdicts[j] == v {
			return j, true
		}
	}
	return state, false
}

// window is the range of states an answer to a request sent at start and
// answered at end can come from, by time alone.
func (tl *churnTimeline) window(start, end time.Time) (first, last int) {
	stale := start.Add(-maxViewLag)
	first = sort.Search(len(tl.returned), func(k int) bool { return !tl.returned[k].Before(stale) })
	last = sort.Search(len(tl.sent), func(k int) bool { return !tl.sent[k].Before(end) })
	return first, last
}

// around describes the verdicts of the states an answer's times allow.
func (tl *churnTimeline) around(start, end time.Time) string {
	first, last := tl.window(start, end)
	distinct := map[churnVerdict]bool{}
	for _, v := range tl.verdicts[first : last+1] {
		distinct[v] = true
	}
	var b strings.Builder
	fmt.Fprintf(&b, "states %d to %d, %d distinct verdicts", first, last, len(distinct))
	if last-first < 5 {
		for j := first; j <= last; j++ {
			fmt.Fprintf(&b, "; %d: %s", j, tl.verdicts[j])
		}
	}
	return b.String()
}
