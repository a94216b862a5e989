package injector

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
	"strings"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/client-go/rest"

	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pkg/cluster"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/mesh/meshwatcher"
	"istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/kube/inject"
	"istio.io/istio/pkg/kube/multicluster"
	istiolog "istio.io/istio/pkg/log"

	"github.com/meshrole/meshrole/certs"
)

// Options configure Start.
type Options struct {
	// RestConfig reaches the API server whose Nodes the injector watches, as
	// istiod does: with ENABLE_NATIVE_SIDECARS unset ("auto"), Istio runs
	// istio-proxy as a native sidecar when every node's kubelet is >= 1.33.
	// Required.
	RestConfig *rest.Config
	// Rendered is the chart output to serve; Render() when nil.
	Rendered *Rendered
}

// Server is Istio's injection webhook serving HTTPS on 127.0.0.1.
type Server struct {
	// URL is the injection endpoint, https://127.0.0.1:<port>/inject.
	URL string
	// CAPEM signed the serving certificate: the webhooks' caBundle.
	CAPEM []byte
	// Rendered is the configuration the injector serves.
	Rendered *Rendered
	// Webhook is Istio's injector.
	Webhook *inject.Webhook

	srv   *http.Server
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	calls []Call
}

// Call is one AdmissionReview the API server sent to the injector.
type Call struct {
	Namespace    string
	Name         string
	GenerateName string
	Labels       map[string]string
	// Patched tells whether Istio answered with a patch (it injected).
	Patched bool
}

// Start builds Istio's injection webhook the way istiod's
// pilot/pkg/bootstrap/sidecarinjector.go does (inject.NewWebhook with a
// watcher over the rendered "config" and "values", the mesh config in the
// Environment, ProxyConfigs in the push context so that the
// proxy.istio.io/config annotation is honoured, the multicluster
// controller for Nodes) and serves its mux over TLS.
func Start(opts Options) (s *Server, err error) {
	if opts.RestConfig == nil {
		return nil, errors.New("injector: RestConfig is required")
	}
	r := opts.Rendered
	if r == nil {
		if r, err = Render(); err != nil {
			return nil, err
		}
	}
	injCfg, err := inject.UnmarshalConfig([]byte(r.InjectionConfig))
	if err != nil {
		return nil, fmt.Errorf("injector: rendered injection config: %w", err)
	}
	meshCfg, err := mesh.ApplyMeshConfig(r.Mesh, mesh.DefaultMeshConfig())
	if err != nil {
		return nil, fmt.Errorf("injector: rendered mesh config: %w", err)
	}

	store := model.NewFakeStore()
	env := &model.Environment{
		Watcher:     meshwatcher.NewTestWatcher(meshCfg),
		ConfigStore: store,
	}
	env.SetPushContext(&model.PushContext{ProxyConfigs: model.GetProxyConfigs(store, meshCfg)})

	s = &Server{Rendered: r, stop: make(chan struct{}), done: make(chan struct{})}
	defer func() {
		if err != nil {
			close(s.stop)
		}
	}()

	kubeClient, err := kube.NewClient(kube.NewClientConfigForRestConfig(opts.RestConfig), cluster.ID(constants.DefaultClusterName))
	if err != nil {
		return nil, fmt.Errorf("injector: kube client: %w", err)
	}
	clusters := multicluster.NewFakeController()
	mux := http.NewServeMux()
	s.Webhook, err = inject.NewWebhook(inject.WebhookParameters{
		Watcher:      &staticWatcher{cfg: &injCfg, values: r.Values},
		Env:          env,
		Mux:          mux,
		MultiCluster: clusters,
	})
	if err != nil {
		return nil, fmt.Errorf("injector: %w", err)
	}
	clusters.Add(cluster.ID(constants.DefaultClusterName), kubeClient, s.stop)
	if !kubeClient.RunAndWait(s.stop) {
		return nil, errors.New("injector: informers did not sync")
	}
	s.Webhook.Run(s.stop)

	bundle, err := certs.Generate(certs.Options{Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(bundle.CertPEM, bundle.KeyPEM)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.CAPEM = bundle.CAPEM
	s.URL = fmt.Sprintf("https://%s%s", ln.Addr(), injectionPath(r.WebhookConfiguration))
	s.srv = &http.Server{
		Handler:           s.record(mux),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	go func() {
		defer close(s.done)
		_ = s.srv.ServeTLS(ln, "", "")
	}()
	return s, nil
}

// Stop shuts the server and the injector's informers down.
func (s *Server) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	<-s.done
	close(s.stop)
	return err
}

// WebhookConfiguration is the chart's istio-sidecar-injector configuration
// with every webhook's clientConfig pointing at this server (URL and
// caBundle); rules, selectors, failurePolicy, reinvocationPolicy, ... are
// the chart's. name overrides the object's name when not empty.
func (s *Server) WebhookConfiguration(name string) *admissionregistrationv1.MutatingWebhookConfiguration {
	mwc := s.Rendered.WebhookConfiguration.DeepCopy()
	if name != "" {
		mwc.Name = name
	}
	for i := range mwc.Webhooks {
		url := s.URL
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: s.CAPEM}
	}
	return mwc
}

// Calls returns the admission requests served so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CallsIn returns the admission requests served so far for pods in namespace.
func (s *Server) CallsIn(namespace string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Namespace == namespace {
			out = append(out, c)
		}
	}
	return out
}

// record notes each AdmissionReview (namespace, pod name, labels) and
// whether Istio's answer carried a patch.
func (s *Server) record(next http.Handler) http.Handler {
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
		s.calls = append(s.calls, Call{
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

// injectionPath is the path of the rendered webhooks' service reference
// (istiodRemote.injectionPath, "/inject" by default).
func injectionPath(mwc *admissionregistrationv1.MutatingWebhookConfiguration) string {
	for _, w := range mwc.Webhooks {
		if svc := w.ClientConfig.Service; svc != nil && svc.Path != nil && strings.HasPrefix(*svc.Path, "/") {
			return *svc.Path
		}
	}
	return "/inject"
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

// ConfigureLogging sends the logs of Istio's packages (the injector logs
// every request at info level) to the file at path, or only errors to
// stderr when path is empty. Call it once, before Start.
func ConfigureLogging(path string) error {
	o := istiolog.DefaultOptions()
	if path == "" {
		o.OutputPaths = []string{"stderr"}
		o.SetDefaultOutputLevel(istiolog.OverrideScopeName, istiolog.ErrorLevel)
	} else {
		o.OutputPaths = []string{path}
	}
	o.ErrorOutputPaths = []string{"stderr"}
	return istiolog.Configure(o)
}
