// Package loadgen sends AdmissionReviews to a webhook on the loopback
// interface, over TLS and HTTP/2 as kube-apiserver does, from a number of
// concurrent workers, and reports throughput, latency percentiles and the
// server's CPU time per admission. Every response is validated (HTTP 200, an
// admission.k8s.io/v1 AdmissionReview answering the request's uid, allowed,
// a well-formed JSON patch if any); failures are counted by kind, not
// ignored.
//
// It is the core of `go run ./test/load` and of `go run ./test/bench`, and
// is meant to be driven by tests that disturb the server during load
// (certificate rotation, SIGTERM to one of several replicas): see
// Options.OnResponse, Options.Targets and Result.ServerCertificates.
//
// Traffic only ever goes to 127.0.0.0/8, ::1 or localhost: Run refuses any
// other URL, and its dialer refuses any non-loopback address.
package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
)

// Options configure Run. URL (or Targets) and at least one of Requests and
// Duration are required; the rest have defaults.
type Options struct {
	// URL of the webhook, e.g. https://127.0.0.1:9443/mutate-v1-pod. Its
	// host must be localhost or a loopback IP address.
	URL string
	// Targets, instead of URL, spreads the requests round-robin over several
	// webhooks, and can lose one while Run runs (Targets.Remove).
	Targets *Targets
	// RootCAs verify the server's certificate. Nil with InsecureSkipVerify
	// false means the system roots (which will not know a test CA).
	RootCAs *x509.CertPool
	// InsecureSkipVerify skips certificate verification.
	InsecureSkipVerify bool
	// ServerName for SNI and verification; the URL's host when empty (with
	// Targets: each target's host).
	ServerName string

	// HTTP1 speaks HTTP/1.1 (one connection per worker) instead of HTTP/2.
	// kube-apiserver uses HTTP/2 for webhooks it reaches by a localhost URL
	// and HTTP/1.1 for every webhook behind a Service.
	HTTP1 bool
	// Connections is how many independent clients (each with its own
	// connection pool) the workers are spread over; 1 when zero. With HTTP/2
	// one client multiplexes all its workers over one connection, like the
	// API server. With HTTP/1.1 each worker of a client has a connection of
	// its own.
	Connections int
	// DisableKeepAlives makes every request open a new connection (a full
	// TLS handshake each): useful to see a rotated certificate at once.
	DisableKeepAlives bool

	// Workers send requests concurrently, each waiting for its answer
	// before sending the next; 4 when zero.
	Workers int
	// Requests bounds the measured requests (0: no count bound).
	Requests int
	// Duration bounds the measured phase (0: no time bound). In-flight
	// requests are completed, not cut off, when it ends.
	Duration time.Duration
	// Warmup runs the same load first for this long without measuring it.
	Warmup time.Duration
	// Timeout bounds each request; 10s (the API server's default webhook
	// timeout) when zero.
	Timeout time.Duration

	// Body is the AdmissionReview to send; every request gets a fresh
	// request.uid. TypicalReview("default") when nil.
	Body []byte
	// ExpectPatch counts a response without a JSON patch as a failure.
	ExpectPatch bool
	// Check, if set, is called on every response that passed the built-in
	// checks; an error counts as a failure of kind KindCheck. It must be
	// safe for concurrent use.
	Check func(*admissionv1.AdmissionResponse) error

	// PID of the server process: its CPU time (utime+stime from
	// /proc/<pid>/stat) is read before and after the measured phase, and
	// its VmRSS after. 0 skips this.
	PID int

	// OnResponse, if set, is called after every measured request, from the
	// worker that sent it. It must be safe for concurrent use and fast.
	OnResponse func(Sample)
	// MaxErrorSamples is how many distinct error messages Result keeps; 10
	// when zero.
	MaxErrorSamples int
}

// Sample is one measured request.
type Sample struct {
	Worker int
	// URL the request was sent to.
	URL     string
	Start   time.Time
	Latency time.Duration
	// Err is nil for a valid answer, else an *Error.
	Err error
	// Response is the answer, when one was decoded (also when Err says it
	// is not valid).
	Response *admissionv1.AdmissionResponse
}

// URLResult is what one URL of Targets answered.
type URLResult struct {
	Requests int
	Errors   int
}

// Error kinds, the keys of Result.ErrorKinds.
const (
	KindTransport = "transport"    // no HTTP response: dial, TLS, reset, timeout
	KindStatus    = "http-status"  // an HTTP status other than 200
	KindDecode    = "decode"       // the body is not an admission.k8s.io/v1 AdmissionReview
	KindUID       = "uid-mismatch" // the response answers another request
	KindDenied    = "denied"       // allowed: false
	KindPatch     = "patch"        // a malformed patch, or none with ExpectPatch
	KindCheck     = "check"        // Options.Check refused the response
)

// Error is a failed request.
type Error struct {
	Kind string
	Msg  string
}

func (e *Error) Error() string { return e.Kind + ": " + e.Msg }

// Latency summarises the latencies of the successful requests.
type Latency struct {
	Min, Mean, P50, P90, P95, P99, Max time.Duration
}

// Result is what Run measured. Counts cover the measured phase only.
type Result struct {
	// Requests is the number of measured requests that got an answer or
	// failed; Errors of them failed. Aborted requests (the context was
	// cancelled while they were in flight) are counted in neither.
	Requests int
	Errors   int
	Aborted  int
	// ErrorKinds counts failures by kind (KindTransport, ...);
	// ErrorSamples are the first distinct messages.
	ErrorKinds   map[string]int
	ErrorSamples []string
	// ByURL splits Requests and Errors by the URL they were sent to.
	ByURL map[string]URLResult
	// Patched counts answers that carried a JSON patch.
	Patched int
	// Warnings counts admission warnings in the answers.
	Warnings int
	// Protocol is the HTTP version of the answers ("HTTP/2.0").
	Protocol string
	// Handshakes counts TLS handshakes (warm-up included);
	// ServerCertificates lists the serial numbers (hex) of the leaf
	// certificates the server presented, in the order first seen.
	Handshakes         int
	ServerCertificates []string

	Workers   int
	BodyBytes int
	// Elapsed is the measured phase's wall time; Throughput is successful
	// requests per second of it.
	Elapsed    time.Duration
	Throughput float64
	Latency    Latency

	// ServerCPU is the server's user+system CPU time during the measured
	// phase (PID set), with the kernel's 10 ms tick resolution;
	// ServerCPUPerRequest divides it by Requests.
	ServerCPU           time.Duration
	ServerCPUPerRequest time.Duration
	// ServerRSS is the server's VmRSS in bytes after the measured phase.
	ServerRSS int64
	// ClientCPU is this process's user+system CPU time during the measured
	// phase: the load generator competes with the server on a small machine.
	ClientCPU           time.Duration
	ClientCPUPerRequest time.Duration
}

// uidPlaceholder marks where each request's uid goes in the body; it has the
// length of a UUID, so every request's body has the same size.
const uidPlaceholder = "loadgen0-uid0-plac-ehol-der000000000"

// CheckURL parses raw and refuses anything but https to localhost or a
// loopback IP address.
func CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("loadgen: URL %q: %w", raw, err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("loadgen: URL %q: only https is supported (webhooks are served over TLS)", raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("loadgen: URL %q: user information is not supported", raw)
	}
	if !isLoopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("loadgen: URL %q: refusing to send load anywhere but localhost or a loopback address", raw)
	}
	return u, nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackOnly is a dialer Control that refuses non-loopback addresses, so
// that no name resolution can send load elsewhere.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("loadgen: refusing to dial non-loopback address %s", address)
	}
	return nil
}

// template is the request body with the uid's offset in it.
type template struct {
	body   []byte
	uidOff int
}

func newTemplate(body []byte) (*template, error) {
	var review map[string]any
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, fmt.Errorf("loadgen: body is not JSON: %w", err)
	}
	if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
		return nil, fmt.Errorf("loadgen: body is %v %v, want an admission.k8s.io/v1 AdmissionReview", review["apiVersion"], review["kind"])
	}
	req, ok := review["request"].(map[string]any)
	if !ok {
		return nil, errors.New("loadgen: body's AdmissionReview has no request")
	}
	req["uid"] = uidPlaceholder
	out, err := json.Marshal(review)
	if err != nil {
		return nil, err
	}
	off := bytes.Index(out, []byte(uidPlaceholder))
	if off < 0 || bytes.Count(out, []byte(uidPlaceholder)) != 1 {
		return nil, errors.New("loadgen: cannot place the request uid in the body")
	}
	return &template{body: out, uidOff: off}, nil
}

// request returns a body with a uid unique to (worker, seq).
func (t *template) request(worker int, seq uint64) ([]byte, string) {
	b := slices.Clone(t.body)
	uid := fmt.Sprintf("%08x-0000-4000-8000-%012x", uint32(worker), seq&0xffffffffffff)
	copy(b[t.uidOff:], uid)
	return b, uid
}

// certLog records the TLS handshakes of all clients.
type certLog struct {
	mu         sync.Mutex
	handshakes int
	serials    []string
}

func (c *certLog) record(cs tls.ConnectionState) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handshakes++
	if len(cs.PeerCertificates) > 0 {
		s := hex.EncodeToString(cs.PeerCertificates[0].SerialNumber.Bytes())
		if !slices.Contains(c.serials, s) {
			c.serials = append(c.serials, s)
		}
	}
	return nil
}

// NewClient is the HTTP client Run uses for opts: TLS with opts' roots,
// HTTP/2 unless opts.HTTP1, dialing loopback addresses only, no redirects.
// onHandshake, if not nil, sees every completed handshake.
func NewClient(opts Options, onHandshake func(tls.ConnectionState) error) (*http.Client, error) {
	if _, err := opts.targets(); err != nil {
		return nil, err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = 4
	}
	serverName := opts.ServerName
	if serverName == "" && opts.Targets == nil {
		u, _ := CheckURL(opts.URL) // checked above
		serverName = u.Hostname()
	}
	// With Targets and no ServerName, the transport verifies each
	// connection against its own target's host.
	tlsConfig := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		RootCAs:            opts.RootCAs,
		ServerName:         serverName,
		InsecureSkipVerify: opts.InsecureSkipVerify, // an explicit option, for local servers only
		VerifyConnection:   onHandshake,
	}
	if opts.HTTP1 {
		tlsConfig.NextProtos = []string{"http/1.1"}
	} else {
		tlsConfig.NextProtos = []string{"h2", "http/1.1"}
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second, Control: loopbackOnly}
	tr := &http.Transport{
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 5 * time.Second,
		ForceAttemptHTTP2:   !opts.HTTP1,
		MaxIdleConns:        workers,
		MaxIdleConnsPerHost: workers,
		IdleConnTimeout:     90 * time.Second,
		DisableKeepAlives:   opts.DisableKeepAlives,
		DisableCompression:  true,
	}
	if opts.HTTP1 {
		// A non-nil empty map turns HTTP/2 off.
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}

// tally counts outcomes. Each worker keeps its own and adds it to its
// phase's stats once at the end, which keeps the lock out of the hot path.
type tally struct {
	latencies []time.Duration
	requests  int
	errors    int
	aborted   int
	kinds     map[string]int
	byURL     map[string]URLResult
	samples   []string
	patched   int
	warnings  int
	protocols map[string]bool
}

func newTally() tally {
	return tally{kinds: map[string]int{}, byURL: map[string]URLResult{}, protocols: map[string]bool{}}
}

// sample keeps msg among the first maxSamples distinct messages.
func (t *tally) sample(msg string, maxSamples int) {
	if len(t.samples) < maxSamples && !slices.Contains(t.samples, msg) {
		t.samples = append(t.samples, msg)
	}
}

// add counts o's outcomes in t too.
func (t *tally) add(o *tally, maxSamples int) {
	t.latencies = append(t.latencies, o.latencies...)
	t.requests += o.requests
	t.errors += o.errors
	t.aborted += o.aborted
	for k, n := range o.kinds {
		t.kinds[k] += n
	}
	for u, n := range o.byURL {
		c := t.byURL[u]
		c.Requests += n.Requests
		c.Errors += n.Errors
		t.byURL[u] = c
	}
	for _, m := range o.samples {
		t.sample(m, maxSamples)
	}
	t.patched += o.patched
	t.warnings += o.warnings
	for p := range o.protocols {
		t.protocols[p] = true
	}
}

// stats is one phase's tally, which its workers add theirs to.
type stats struct {
	mu sync.Mutex
	tally
	maxSamples int
}

func newStats(maxSamples int) *stats {
	return &stats{tally: newTally(), maxSamples: maxSamples}
}

func (s *stats) merge(l *tally) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add(l, s.maxSamples)
}

// Run sends load as opts say and returns what it measured. It returns an
// error only when it cannot run at all (bad options, unreadable /proc);
// failed requests are counted in Result. Cancelling ctx stops it early,
// aborting in-flight requests, and returns what was measured so far.
func Run(ctx context.Context, opts Options) (Result, error) {
	targets, err := opts.targets()
	if err != nil {
		return Result{}, err
	}
	if opts.Requests <= 0 && opts.Duration <= 0 {
		return Result{}, errors.New("loadgen: unbounded load: set Requests, Duration or both")
	}
	if opts.Requests < 0 || opts.Duration < 0 || opts.Warmup < 0 || opts.Workers < 0 || opts.Connections < 0 {
		return Result{}, errors.New("loadgen: negative bound")
	}
	if opts.Workers == 0 {
		opts.Workers = 4
	}
	if opts.Connections == 0 {
		opts.Connections = 1
	}
	if opts.Connections > opts.Workers {
		opts.Connections = opts.Workers
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.MaxErrorSamples == 0 {
		opts.MaxErrorSamples = 10
	}
	if opts.Body == nil {
		body, err := TypicalReview("default")
		if err != nil {
			return Result{}, err
		}
		opts.Body = body
	}
	tmpl, err := newTemplate(opts.Body)
	if err != nil {
		return Result{}, err
	}

	certs := &certLog{}
	clients := make([]*http.Client, opts.Connections)
	for i := range clients {
		if clients[i], err = NewClient(opts, certs.record); err != nil {
			return Result{}, err
		}
	}
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()

	var seq atomic.Uint64
	// One request per client and target before the workers start: with
	// HTTP/2 the workers then share that one connection, as the API
	// server's requests to a webhook do, instead of racing to dial one each.
	// Its outcome is not measured.
	for i, c := range clients {
		for _, u := range targets.URLs() {
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			body, _ := tmpl.request(i, seq.Add(1))
			_, _, _ = send(ctx, c, opts, u, body)
		}
	}
	if opts.Warmup > 0 {
		runPhase(ctx, opts, targets, tmpl, clients, &seq, 0, opts.Warmup, nil, newStats(0))
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
	}

	var cpu0, cpu1 time.Duration
	if opts.PID > 0 {
		if cpu0, err = ProcessCPU(opts.PID); err != nil {
			return Result{}, err
		}
	}
	self0 := selfCPU()
	st := newStats(opts.MaxErrorSamples)
	start := time.Now()
	runPhase(ctx, opts, targets, tmpl, clients, &seq, opts.Requests, opts.Duration, opts.OnResponse, st)
	elapsed := time.Since(start)
	self1 := selfCPU()

	res := Result{
		Requests:   st.requests,
		Errors:     st.errors,
		Aborted:    st.aborted,
		ErrorKinds: st.kinds,
		ByURL:      st.byURL,
		Patched:    st.patched,
		Warnings:   st.warnings,
		Workers:    opts.Workers,
		BodyBytes:  len(tmpl.body),
		Elapsed:    elapsed,
		ClientCPU:  self1 - self0,
	}
	res.ErrorSamples = st.samples
	var protos []string
	for p := range st.protocols {
		protos = append(protos, p)
	}
	slices.Sort(protos)
	res.Protocol = strings.Join(protos, ",")
	certs.mu.Lock()
	res.Handshakes = certs.handshakes
	res.ServerCertificates = slices.Clone(certs.serials)
	certs.mu.Unlock()
	if elapsed > 0 {
		res.Throughput = float64(res.Requests-res.Errors) / elapsed.Seconds()
	}
	res.Latency = summarize(st.latencies)
	if res.Requests > 0 {
		res.ClientCPUPerRequest = res.ClientCPU / time.Duration(res.Requests)
	}
	if opts.PID > 0 {
		if cpu1, err = ProcessCPU(opts.PID); err != nil {
			return res, err
		}
		res.ServerCPU = cpu1 - cpu0
		if res.Requests > 0 {
			res.ServerCPUPerRequest = res.ServerCPU / time.Duration(res.Requests)
		}
		if res.ServerRSS, err = ProcessRSS(opts.PID); err != nil {
			return res, err
		}
	}
	return res, ctx.Err()
}

// runPhase runs the workers until maxRequests (0: unbounded) have been sent,
// duration (0: unbounded) has passed, or ctx is done.
func runPhase(ctx context.Context, opts Options, targets *Targets, tmpl *template, clients []*http.Client, seq *atomic.Uint64,
	maxRequests int, duration time.Duration, onResponse func(Sample), st *stats) {
	var deadline time.Time
	if duration > 0 {
		deadline = time.Now().Add(duration)
	}
	var issued atomic.Int64
	var wg sync.WaitGroup
	for w := range opts.Workers {
		client := clients[w%len(clients)]
		wg.Go(func() {
			l := newTally()
			defer st.merge(&l)
			for {
				if ctx.Err() != nil {
					return
				}
				if !deadline.IsZero() && !time.Now().Before(deadline) {
					return
				}
				if maxRequests > 0 && issued.Add(1) > int64(maxRequests) {
					return
				}
				body, uid := tmpl.request(w, seq.Add(1))
				target := targets.pick()
				start := time.Now()
				proto, resp, err := send(ctx, client, opts, target, body)
				if err == nil {
					err = validate(resp, uid, opts)
				}
				lat := time.Since(start)
				if ctx.Err() != nil {
					// Cut off by the caller, not failed by the server.
					l.aborted++
					return
				}
				l.requests++
				perURL := l.byURL[target]
				perURL.Requests++
				if err != nil {
					perURL.Errors++
				}
				l.byURL[target] = perURL
				if proto != "" {
					l.protocols[proto] = true
				}
				if err != nil {
					l.errors++
					var e *Error
					if !errors.As(err, &e) {
						e = &Error{Kind: KindTransport, Msg: err.Error()}
						err = e
					}
					l.kinds[e.Kind]++
					l.sample(e.Error(), st.maxSamples)
				} else {
					l.latencies = append(l.latencies, lat)
					if len(resp.Response.Patch) > 0 {
						l.patched++
					}
					l.warnings += len(resp.Response.Warnings)
				}
				if onResponse != nil {
					s := Sample{Worker: w, URL: target, Start: start, Latency: lat, Err: err}
					if resp != nil {
						s.Response = resp.Response
					}
					onResponse(s)
				}
			}
		})
	}
	wg.Wait()
}

// send POSTs one review and decodes the answer.
func send(ctx context.Context, client *http.Client, opts Options, target string, body []byte) (string, *admissionv1.AdmissionReview, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return "", nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", nil, &Error{Kind: KindTransport, Msg: err.Error()}
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return resp.Proto, nil, &Error{Kind: KindTransport, Msg: "reading the response: " + err.Error()}
	}
	if resp.StatusCode != http.StatusOK {
		return resp.Proto, nil, &Error{Kind: KindStatus, Msg: fmt.Sprintf("HTTP %d: %s", resp.StatusCode, truncate(string(data), 200))}
	}
	review := &admissionv1.AdmissionReview{}
	if err := json.Unmarshal(data, review); err != nil {
		return resp.Proto, nil, &Error{Kind: KindDecode, Msg: fmt.Sprintf("%v: %s", err, truncate(string(data), 200))}
	}
	return resp.Proto, review, nil
}

// validate checks an answer as kube-apiserver would, and a little more.
func validate(review *admissionv1.AdmissionReview, uid string, opts Options) error {
	if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" {
		return &Error{Kind: KindDecode, Msg: fmt.Sprintf("answer is %q %q, want admission.k8s.io/v1 AdmissionReview", review.APIVersion, review.Kind)}
	}
	r := review.Response
	if r == nil {
		return &Error{Kind: KindDecode, Msg: "AdmissionReview has no response"}
	}
	if string(r.UID) != uid {
		return &Error{Kind: KindUID, Msg: fmt.Sprintf("answer for uid %q, sent %q", r.UID, uid)}
	}
	if !r.Allowed {
		msg := "allowed: false"
		if r.Result != nil {
			msg += fmt.Sprintf(" (%d %s)", r.Result.Code, r.Result.Message)
		}
		return &Error{Kind: KindDenied, Msg: msg}
	}
	if len(r.Patch) > 0 {
		if r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch {
			return &Error{Kind: KindPatch, Msg: "patch without patchType JSONPatch"}
		}
		var ops []struct {
			Op   string `json:"op"`
			Path string `json:"path"`
		}
		if err := json.Unmarshal(r.Patch, &ops); err != nil {
			return &Error{Kind: KindPatch, Msg: "patch is not a JSON patch: " + err.Error()}
		}
		for _, op := range ops {
			if op.Op == "" || !strings.HasPrefix(op.Path, "/") {
				return &Error{Kind: KindPatch, Msg: fmt.Sprintf("malformed patch operation %+v", op)}
			}
		}
	} else if opts.ExpectPatch {
		return &Error{Kind: KindPatch, Msg: "no patch in the answer"}
	}
	if opts.Check != nil {
		if err := opts.Check(r); err != nil {
			return &Error{Kind: KindCheck, Msg: err.Error()}
		}
	}
	return nil
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func summarize(l []time.Duration) Latency {
	if len(l) == 0 {
		return Latency{}
	}
	slices.Sort(l)
	var sum time.Duration
	for _, d := range l {
		sum += d
	}
	return Latency{
		Min:  l[0],
		Mean: sum / time.Duration(len(l)),
		P50:  Percentile(l, 50),
		P90:  Percentile(l, 90),
		P95:  Percentile(l, 95),
		P99:  Percentile(l, 99),
		Max:  l[len(l)-1],
	}
}

// Percentile is the nearest-rank percentile p (0-100] of sorted.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted)) + 0.999999999)
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// String is a human-readable report.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "requests      %d (%d errors", r.Requests, r.Errors)
	if r.Aborted > 0 {
		fmt.Fprintf(&b, ", %d aborted", r.Aborted)
	}
	fmt.Fprintf(&b, ") in %v, %d workers, %s, %d-byte reviews\n", r.Elapsed.Round(time.Millisecond), r.Workers, r.Protocol, r.BodyBytes)
	if len(r.ErrorKinds) > 0 {
		kinds := make([]string, 0, len(r.ErrorKinds))
		for k, n := range r.ErrorKinds {
			kinds = append(kinds, k+"="+strconv.Itoa(n))
		}
		slices.Sort(kinds)
		fmt.Fprintf(&b, "errors        %s\n", strings.Join(kinds, " "))
		for _, s := range r.ErrorSamples {
			fmt.Fprintf(&b, "  e.g.        %s\n", s)
		}
	}
	if len(r.ByURL) > 1 {
		urls := slices.Sorted(maps.Keys(r.ByURL))
		for _, u := range urls {
			fmt.Fprintf(&b, "target        %s: %d requests (%d errors)\n", u, r.ByURL[u].Requests, r.ByURL[u].Errors)
		}
	}
	fmt.Fprintf(&b, "throughput    %.0f admissions/s (%d patched, %d warnings)\n", r.Throughput, r.Patched, r.Warnings)
	l := r.Latency
	fmt.Fprintf(&b, "latency       p50 %v  p90 %v  p95 %v  p99 %v  max %v  (mean %v)\n",
		Round(l.P50), Round(l.P90), Round(l.P95), Round(l.P99), Round(l.Max), Round(l.Mean))
	if r.ServerCPU > 0 || r.ServerRSS > 0 {
		fmt.Fprintf(&b, "server CPU    %v total, %v per request; RSS %.1f MiB\n", r.ServerCPU, Round(r.ServerCPUPerRequest), float64(r.ServerRSS)/(1<<20))
	}
	fmt.Fprintf(&b, "client CPU    %v total, %v per request\n", r.ClientCPU.Round(time.Millisecond), Round(r.ClientCPUPerRequest))
	fmt.Fprintf(&b, "TLS           handshakes: %d, server certificate serials: %v\n", r.Handshakes, r.ServerCertificates)
	return b.String()
}

// Round rounds d to three significant digits for display.
func Round(d time.Duration) time.Duration {
	switch {
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d >= 100*time.Microsecond:
		return d.Round(time.Microsecond)
	default:
		return d.Round(100 * time.Nanosecond)
	}
}
