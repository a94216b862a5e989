package e2e

import (
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshrole/meshrole/test/load/loadgen"
)

// testReplicaTerminatedUnderLoad: two webhook replicas behind one client
// that spreads admissions over both, as the Service in front of the
// webhook's pods does for the API server. Mid-load replica A is deleted as
// Kubernetes deletes a pod: it gets SIGTERM and its endpoint leaves the
// client's targets, at the same moment or a little later (the removal
// propagates to the API server's node asynchronously). Requests sent to A
// complete, later ones go to B: no admission fails, every answer carries the
// policy's patch, and A exits cleanly. What makes this hold is the server's
// --shutdown-delay (cmd/webhook): without it, A's listener closed within
// milliseconds of the SIGTERM and admissions failed with EOF, connection
// reset or connection refused.
func testReplicaTerminatedUnderLoad(t *testing.T) {
	ctx := scenario(t, 90*time.Second)
	body := loadNamespace(t, ctx, "e2e-replica-terminated", allPeersPolicy)

	for _, tc := range []struct {
		name string
		lag  time.Duration // from the SIGTERM to the endpoint's removal
	}{
		{"endpoint removed with the SIGTERM", 0},
		{"endpoint removed 1s after the SIGTERM", time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A is a replica started for this test (ready once its policy
			// cache has synced, so it knows the policy); B is the suite's
			// webhook, which keeps serving the API server afterwards.
			started := time.Now()
			a, err := h.StartWebhook(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("replica A ready in %v", time.Since(started).Round(time.Millisecond))
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("replica A log tail (%s):\n%s", a.LogPath(), a.LogTail(40))
				}
				_ = a.Signal(syscall.SIGCONT) // if a failure left it paused
				if err := a.Stop(); err != nil {
					t.Error(err)
				}
			})
			urlA, urlB := a.URL(), h.Webhook.URL()
			targets, err := loadgen.NewTargets(urlA, urlB)
			if err != nil {
				t.Fatal(err)
			}

			// Every valid answer from A, to see which were in flight at the
			// SIGTERM.
			var mu sync.Mutex
			var fromA []loadgen.Sample
			loadStart := time.Now()
			// HTTP/1.1 with keep-alive: what the API server speaks to a
			// webhook behind a Service.
			load := startLoad(ctx, loadgen.Options{
				Targets: targets, HTTP1: true, Workers: 32, Duration: 4 * time.Second, Body: body, ExpectPatch: true,
				OnResponse: func(s loadgen.Sample) {
					if s.URL == urlA && s.Err == nil {
						mu.Lock()
						fromA = append(fromA, s)
						mu.Unlock()
					}
				},
			})
			time.Sleep(1300 * time.Millisecond)
			// A is paused for a moment, as CPU throttling would: requests
			// sent to it meanwhile wait, so that some are certainly in
			// flight at the SIGTERM.
			if err := a.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			// The pod is deleted: the kubelet sends SIGTERM, and the
			// endpoint is removed.
			sigterm := time.Now()
			if err := a.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := a.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			exitedAt := make(chan time.Time, 1)
			go func() {
				<-a.Exited()
				exitedAt <- time.Now()
			}()
			time.Sleep(tc.lag)
			if err := targets.Remove(urlA); err != nil {
				t.Fatal(err)
			}
			var exited time.Duration
			select {
			case at := <-exitedAt:
				exited = at.Sub(sigterm)
			case <-time.After(30 * time.Second):
				t.Fatalf("replica A still running 30s after SIGTERM")
			}
			result := load.wait(t)

			mu.Lock()
			defer mu.Unlock()
			// A's answers that arrived after the SIGTERM, by whether their
			// request was sent before it or after.
			var spanning, sentAfter int
			for _, s := range fromA {
				switch {
				case !s.Start.Before(sigterm):
					sentAfter++
				case s.Start.Add(s.Latency).After(sigterm):
					spanning++
				}
			}
			t.Logf("%d admissions in %v (%d to A, %d to B), %d failed; A got SIGTERM %v into the load; "+
				"of its answers after it, %d were to requests sent before it and %d to requests sent after it; "+
				"A exited %v after the SIGTERM (%s)",
				result.Requests, result.Elapsed.Round(time.Millisecond), result.ByURL[urlA].Requests, result.ByURL[urlB].Requests,
				result.Errors, sigterm.Sub(loadStart).Round(time.Millisecond), spanning, sentAfter,
				exited.Round(time.Millisecond), a.ExitStatus())
			if result.Requests == 0 || result.Errors != 0 {
				t.Fatalf("%d admissions, %d failed: %v %v", result.Requests, result.Errors, result.ErrorKinds, result.ErrorSamples)
			}
			if result.Patched != result.Requests {
				t.Errorf("%d of %d answers carried the policy's patch", result.Patched, result.Requests)
			}
			if result.ByURL[urlA].Requests == 0 || result.ByURL[urlB].Requests == 0 {
				t.Errorf("requests by replica %v: want both to have answered", result.ByURL)
			}
			// The case under test happened: A had requests in flight at
			// the SIGTERM (and, with a lag, got new ones after it).
			if spanning == 0 {
				t.Errorf("no request to A was in flight at the SIGTERM: the test did not exercise the shutdown")
			}
			if tc.lag > 0 && sentAfter == 0 {
				t.Errorf("A answered no request sent in the %v between the SIGTERM and its endpoint's removal", tc.lag)
			}
			// A shut down cleanly: the manager returned without error.
			if got := a.ExitStatus(); got != "exit status 0" {
				t.Errorf("replica A ended with %q, want exit status 0", got)
			}
			if log, err := os.ReadFile(a.LogPath()); err != nil {
				t.Error(err)
			} else if strings.Contains(string(log), "error shutting down") {
				t.Errorf("replica A's log reports an error shutting down:\n%s", a.LogTail(20))
			}
		})
	}
}
