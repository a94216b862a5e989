package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pkg/cluster"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/mesh/meshwatcher"
	"istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/kube/inject"
	"istio.io/istio/pkg/kube/multicluster"
	istiolog "istio.io/istio/pkg/log"
)

type serverOptions struct {
	// Kubeconfig reaches the API server whose Nodes the injector watches, as
	// istiod does: with ENABLE_NATIVE_SIDECARS unset ("auto"), Istio runs
	// istio-proxy as a native sidecar when every node's kubelet is >= 1.33.
	Kubeconfig string
	// Listen is the address to serve on.
	Listen string
	// CertFile and KeyFile are the serving certificate.
	CertFile, KeyFile string
	// Rendered is the chart output to serve.
	Rendered *rendered
}

// server is Istio's injection webhook serving HTTPS.
type server struct {
	// URL is the injection endpoint.
	URL string
	// failed receives the error the HTTPS server stopped with.
	failed chan error

	srv   *http.Server
	stop  chan struct{}
	mu    sync.Mutex
	calls []call
}

// call is one AdmissionReview the API server sent to the injector.
type call struct {
	Namespace    string            `json:"namespace"`
	Name         string            `json:"name,omitempty"`
	GenerateName string            `json:"generateName,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	// Patched tells whether Istio answered with a patch (it injected).
	Patched bool `json:"patched"`
}

// start builds Istio's injection webhook the way istiod's
// pilot/pkg/bootstrap/sidecarinjector.go does (inject.NewWebhook with a
// watcher over the rendered "config" and "values", the mesh config in the
// Environment, ProxyConfigs in the push context so that the
// proxy.istio.io/config annotation is honoured, the multicluster
// controller for Nodes) and serves its mux over TLS.
func start(opts serverOptions) (s *server, err error) {
	r := opts.Rendered
	injCfg, err := inject.UnmarshalConfig([]byte(r.InjectionConfig))
	if err != nil {
		return nil, fmt.Errorf("rendered injection config: %w", err)
	}
	meshCfg, err := mesh.ApplyMeshConfig(r.Mesh, mesh.DefaultMeshConfig())
	if err != nil {
		return nil, fmt.Errorf("rendered mesh config: %w", err)
	}

	store := model.NewFakeStore()
	env := &model.Environment{
		Watcher:     meshwatcher.NewTestWatcher(meshCfg),
		ConfigStore: store,
	}
	env.SetPushContext(&model.PushContext{ProxyConfigs: model.GetProxyConfigs(store, meshCfg)})

	s = &server{stop: make(chan struct{}), failed: make(chan error, 1)}
	defer func() {
		if err != nil {
			close(s.stop)
		}
	}()

	restConfig, err := clientcmd.BuildConfigFromFlags("", opts.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", opts.Kubeconfig, err)
	}
	kubeClient, err := kube.NewClient(kube.NewClientConfigForRestConfig(restConfig), cluster.ID(constants.DefaultClusterName))
	if err != nil {
		return nil, fmt.Errorf("kube client: %w", err)
	}
	// The component builder istiod gives the injector; with no remote
	// clusters the fake serves.
	clusters := multicluster.NewFakeController()
	mux := http.NewServeMux()
	wh, err := inject.NewWebhook(inject.WebhookParameters{
		Watcher:      &staticWatcher{cfg: &injCfg, values: r.Values},
		Env:          env,
		Mux:          mux,
		MultiCluster: clusters,
	})
	if err != nil {
		return nil, fmt.Errorf("inject.NewWebhook: %w", err)
	}
	clusters.Add(cluster.ID(constants.DefaultClusterName), kubeClient, s.stop)
	if !kubeClient.RunAndWait(s.stop) {
		return nil, errors.New("the injector's informers did not sync")
	}
	wh.Run(s.stop)

	cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, err
	}
	s.URL = fmt.Sprintf("https://%s%s", ln.Addr(), injectionPath(r.WebhookConfiguration))
	handler := http.NewServeMux()
	handler.HandleFunc("GET /calls", s.serveCalls)
	handler.Handle("/", s.record(mux))
	s.srv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	go func() {
		if err := s.srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			s.failed <- err
		}
	}()
	return s, nil
}

// Stop shuts the server and the injector's informers down.
func (s *server) Stop(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	close(s.stop)
	return err
}

func (s *server) serveCalls(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	body, err := json.Marshal(s.calls)
	s.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// record notes each AdmissionReview (namespace, pod name, labels) and
// whether Istio's answer carried a patch.
func (s *server) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var review struct {
			Request *struct {
				Namespace string `json:"namespace"`
				Object    struct {
					Metadata struct {
						Name         string            `json:"name"`
						GenerateName string            `json:"generateName"`
						Labels       map[string]string `json:"labels"`
					} `json:"metadata"`
				} `json:"object"`
			} `json:"request"`
		}
		rec := &responseRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if json.Unmarshal(body, &review) != nil || review.Request == nil {
			return
		}
		var resp struct {
			Response *struct {
				Patch []byte `json:"patch"`
			} `json:"response"`
		}
		_ = json.Unmarshal(rec.body.Bytes(), &resp)
		md := review.Request.Object.Metadata
		s.mu.Lock()
		s.calls = append(s.calls, call{
			Namespace:    review.Request.Namespace,
			Name:         md.Name,
			GenerateName: md.GenerateName,
			Labels:       md.Labels,
			Patched:      resp.Response != nil && len(resp.Response.Patch) > 0,
		})
		s.mu.Unlock()
	})
}

type responseRecorder struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (r *responseRecorder) Write(b []byte) (int, error) {
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// staticWatcher serves the rendered configuration; istiod's file and
// ConfigMap watchers only add reloading.
type staticWatcher struct {
	cfg    *inject.Config
	values string
}

func (w *staticWatcher) SetHandler(func(*inject.Config, string) error) {}
func (w *staticWatcher) Run(<-chan struct{})                           {}
func (w *staticWatcher) Get() (*inject.Config, string, error)          { return w.cfg, w.values, nil }

// configureLogging sends the logs of Istio's packages (the injector logs
// every request at info level) to stdout, errors to stderr.
func configureLogging() error {
	o := istiolog.DefaultOptions()
	o.OutputPaths = []string{"stdout"}
	o.ErrorOutputPaths = []string{"stderr"}
	return istiolog.Configure(o)
}
