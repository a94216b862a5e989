// Package injector builds and runs Istio's real sidecar injector for the
// Istio suite: one small server binary per Istio version, each built from
// its own module under test/istio/injectors/<version> (written by
// test/istio/injectors/gen.sh), so that every version keeps the
// dependencies it was released with. The API server calls it over HTTPS
// through that version's own istio-sidecar-injector webhook configuration,
// as in a cluster.
package injector

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

	"github.com/meshrole/meshrole/test/harness"
)

const (
	// EnvVersion selects the Istio version (a name in versions.txt);
	// DefaultVersion when unset.
	EnvVersion = "MESHROLE_ISTIO_VERSION"
	// DefaultVersion is the current pin of Istio's master branch.
	DefaultVersion = "master"

	// WebhookConfigurationName is the name of Istio's MutatingWebhookConfiguration
	// for the default revision installed in istio-system.
	WebhookConfigurationName = "istio-sidecar-injector"
)

// Version is one line of test/istio/injectors/versions.txt.
type Version struct {
	// Name is the directory under test/istio/injectors and the value of
	// MESHROLE_ISTIO_VERSION.
	Name string
	// Ref is the istio.io/istio version or tag the module is generated from.
	Ref string
}

// InjectorsDir is test/istio/injectors under the repository root.
func InjectorsDir(root string) string {
	return filepath.Join(root, "test", "istio", "injectors")
}

// Versions reads versions.txt.
func Versions(root string) ([]Version, error) {
	path := filepath.Join(InjectorsDir(root), "versions.txt")
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var out []Version
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s: want \"<name> <version>\", got %q", path, line)
		}
		out = append(out, Version{Name: fields[0], Ref: fields[1]})
	}
	return out, s.Err()
}

// SelectedVersion is $MESHROLE_ISTIO_VERSION, or DefaultVersion.
func SelectedVersion() string {
	if v := os.Getenv(EnvVersion); v != "" {
		return v
	}
	return DefaultVersion
}

// Build builds the injector of Istio version name into
// <root>/bin/istio-injector/<name> unless that binary is newer than the
// shared source (injectors/_template) and the version's module (its go.mod
// and go.sum), and returns its path and whether it was (re)built. The source
// is one for every version; it is put beside each version's go.mod in a
// git-ignored build directory.
func Build(ctx context.Context, root, name string) (bin string, built bool, err error) {
	template := filepath.Join(InjectorsDir(root), "_template")
	module := filepath.Join(InjectorsDir(root), name)
	if _, err := os.Stat(filepath.Join(module, "go.mod")); err != nil {
		return "", false, fmt.Errorf("no injector module for Istio %q in %s: add it to versions.txt and run test/istio/injectors/gen.sh %s", name, module, name)
	}
	bin = filepath.Join(root, "bin", "istio-injector", name)
	if upToDate(bin, template) && upToDate(bin, module) {
		return bin, false, nil
	}
	src := filepath.Join(root, "bin", "istio-injector", "src", name)
	if err := assemble(src, template, module); err != nil {
		return "", false, err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(),
		// go.sum holds every hash: nothing to ask the checksum database,
		// which does not know some of released Istio's pseudo-versions.
		"GONOSUMDB=github.com/envoyproxy,istio.io",
		"GOFLAGS=-mod=readonly",
		"GOWORK=off",
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", false, fmt.Errorf("building Istio %s's injector (%s with %s): %w\n%s", name, template, module, err, out)
	}
	return bin, true, nil
}

// assemble fills dir with the files of the given directories.
func assemble(dir string, from ...string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range from {
		entries, err := os.ReadDir(d)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.IsDir() {
				continue
			}
			data, err := os.ReadFile(filepath.Join(d, e.Name()))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// upToDate reports whether bin exists and is newer than every file in src.
func upToDate(bin, src string) bool {
	fi, err := os.Stat(bin)
	if err != nil {
		return false
	}
	fresh := true
	_ = filepath.WalkDir(src, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			fresh = false
			return err
		}
		if info, err := d.Info(); err != nil || (!d.IsDir() && info.ModTime().After(fi.ModTime())) {
			fresh = false
			return fs.SkipAll
		}
		return nil
	})
	return fresh
}

// Options configure Start.
type Options struct {
	// Bin is the injector binary (Build).
	Bin string
	// Kubeconfig reaches the API server whose Nodes the injector watches, as
	// istiod does: with ENABLE_NATIVE_SIDECARS unset ("auto"), Istio runs
	// istio-proxy as a native sidecar when every node's kubelet is >= 1.33.
	Kubeconfig string
	// CertDir holds ca.crt, tls.crt and tls.key for 127.0.0.1.
	CertDir string
	// LogPath receives the injector's output (Istio logs every request).
	LogPath string
}

// Server is a running injector.
type Server struct {
	// URL is the injection endpoint, https://127.0.0.1:<port>/inject.
	URL string
	// IstioVersion is the istio.io/istio module version the binary was
	// built from.
	IstioVersion string
	// Flags are the --set flags the chart was rendered with.
	Flags []string
	// CNI is the rendered values' pilot.cni.enabled: Istio's injection
	// template then adds istio-validation instead of istio-init.
	CNI bool

	proc   *harness.Process
	mwc    *admissionregistrationv1.MutatingWebhookConfiguration
	client *http.Client
}

// Start starts the injector and waits until it serves.
func Start(ctx context.Context, opts Options) (*Server, error) {
	dir, err := os.MkdirTemp(filepath.Dir(opts.LogPath), "istio-injector-")
	if err != nil {
		return nil, err
	}
	ready := filepath.Join(dir, "ready.json")
	proc := &harness.Process{
		Name: "istio-injector",
		Path: opts.Bin,
		Args: []string{
			"-kubeconfig", opts.Kubeconfig,
			"-tls-cert", filepath.Join(opts.CertDir, "tls.crt"),
			"-tls-key", filepath.Join(opts.CertDir, "tls.key"),
			"-ca-bundle", filepath.Join(opts.CertDir, "ca.crt"),
			"-ready", ready,
		},
		LogPath: opts.LogPath,
	}
	if err := proc.Start(); err != nil {
		return nil, err
	}
	s := &Server{proc: proc}
	if err := s.waitReady(ctx, ready, 60*time.Second); err != nil {
		_ = proc.Stop()
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(opts.CertDir, "ca.crt"))
	if err != nil {
		_ = proc.Stop()
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	s.client = &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		data, err := os.ReadFile(path)
		if err == nil {
			var r struct {
				URL                  string                                                `json:"url"`
				IstioVersion         string                                                `json:"istioVersion"`
				Flags                []string                                              `json:"flags"`
				Values               string                                                `json:"values"`
				WebhookConfiguration *admissionregistrationv1.MutatingWebhookConfiguration `json:"webhookConfiguration"`
			}
			if err := json.Unmarshal(data, &r); err != nil {
				return fmt.Errorf("istio-injector's %s: %w", path, err)
			}
			if r.WebhookConfiguration == nil {
				return fmt.Errorf("istio-injector's %s has no webhookConfiguration", path)
			}
			var values struct {
				Pilot struct {
					CNI struct {
						Enabled bool `json:"enabled"`
					} `json:"cni"`
				} `json:"pilot"`
			}
			if err := json.Unmarshal([]byte(r.Values), &values); err != nil {
				return fmt.Errorf("istio-injector's rendered values: %w", err)
			}
			s.URL, s.IstioVersion, s.Flags, s.CNI, s.mwc = r.URL, r.IstioVersion, r.Flags, values.Pilot.CNI.Enabled, r.WebhookConfiguration
			return nil
		}
		select {
		case <-s.proc.Exited():
			return fmt.Errorf("istio-injector exited (%s) before serving:\n%s", s.proc.ExitStatus(), s.proc.LogTail(30))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("istio-injector not serving after %v:\n%s", timeout, s.proc.LogTail(30))
		}
	}
}

// Stop stops the injector.
func (s *Server) Stop() error { return s.proc.Stop() }

// LogTail returns the last n lines of the injector's output.
func (s *Server) LogTail(n int) string { return s.proc.LogTail(n) }

// WebhookConfiguration is the chart's istio-sidecar-injector configuration
// with every webhook's clientConfig pointing at this server (URL and
// caBundle); rules, selectors, failurePolicy, reinvocationPolicy, ... are
// the chart's.
func (s *Server) WebhookConfiguration() *admissionregistrationv1.MutatingWebhookConfiguration {
	return s.mwc.DeepCopy()
}

// Call is one AdmissionReview the API server sent to the injector.
type Call struct {
	Namespace    string            `json:"namespace"`
	Name         string            `json:"name"`
	GenerateName string            `json:"generateName"`
	Labels       map[string]string `json:"labels"`
	// Patched tells whether Istio answered with a patch (it injected).
	Patched bool `json:"patched"`
}

// Calls returns the admission requests served so far.
func (s *Server) Calls(ctx context.Context) ([]Call, error) {
	u, err := url.Parse(s.URL)
	if err != nil {
		return nil, err
	}
	u.Path = "/calls"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking istio-injector for its calls: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("istio-injector's %s: %s: %s", u, resp.Status, body)
	}
	var calls []Call
	if err := json.Unmarshal(body, &calls); err != nil {
		return nil, fmt.Errorf("istio-injector's /calls: %w", err)
	}
	return calls, nil
}
