// Command injector serves Istio's real sidecar injector
// (istio.io/istio/pkg/kube/inject, the code istiod serves on /inject) over
// HTTPS, configured as an `istioctl install` of the default profile
// configures istiod: the injection template, the values and the mesh config
// come from rendering the istiod chart compiled into the istio.io/istio
// module this binary is built from, and the MutatingWebhookConfiguration it
// reports is the one that chart renders, with only its clientConfig pointed
// at this server.
//
// It is built once per Istio version, each from a module that keeps that
// version's own dependencies (test/istio/injectors/gen.sh writes them).
// Once serving, it writes -ready: the URL, Istio's module version, the
// rendered webhook configuration. GET /calls lists the admission requests
// served so far.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
)

// Ready is what -ready receives once the server answers.
type Ready struct {
	// URL is the injection endpoint, https://<listen address><path>.
	URL string `json:"url"`
	// IstioVersion is the istio.io/istio module version this binary was
	// built from.
	IstioVersion string `json:"istioVersion"`
	// Flags are the --set flags the chart was rendered with.
	Flags []string `json:"flags"`
	// Values is the istio-sidecar-injector ConfigMap's "values": the Helm
	// values the injection templates see.
	Values string `json:"values"`
	// WebhookConfiguration is the chart's istio-sidecar-injector
	// MutatingWebhookConfiguration with every webhook's clientConfig set to
	// URL and -ca-bundle.
	WebhookConfiguration json.RawMessage `json:"webhookConfiguration"`
}

type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "injector:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		kubeconfig = flag.String("kubeconfig", "", "kubeconfig of the API server whose Nodes the injector watches (required)")
		listen     = flag.String("listen", "127.0.0.1:0", "address to serve HTTPS on")
		certFile   = flag.String("tls-cert", "", "serving certificate, PEM (required)")
		keyFile    = flag.String("tls-key", "", "serving certificate's key, PEM (required)")
		caFile     = flag.String("ca-bundle", "", "CA that signed -tls-cert, PEM: the webhooks' caBundle (required)")
		readyFile  = flag.String("ready", "", "file to write the Ready JSON to once serving (required)")
		sets       setFlags
	)
	flag.Var(&sets, "set", "a --set flag for rendering the charts, as istioctl takes it (repeatable; default profile=default)")
	flag.Parse()
	for name, v := range map[string]string{"kubeconfig": *kubeconfig, "tls-cert": *certFile, "tls-key": *keyFile, "ca-bundle": *caFile, "ready": *readyFile} {
		if v == "" {
			return fmt.Errorf("-%s is required", name)
		}
	}
	if len(sets) == 0 {
		sets = setFlags{"profile=default"}
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	if err := configureLogging(); err != nil {
		return err
	}

	rendered, err := renderCharts(sets)
	if err != nil {
		return err
	}
	srv, err := start(serverOptions{
		Kubeconfig: *kubeconfig,
		Listen:     *listen,
		CertFile:   *certFile,
		KeyFile:    *keyFile,
		Rendered:   rendered,
	})
	if err != nil {
		return err
	}
	mwc, err := json.Marshal(webhookConfiguration(rendered.WebhookConfiguration, srv.URL, caPEM))
	if err != nil {
		return err
	}
	ready, err := json.Marshal(Ready{URL: srv.URL, IstioVersion: istioVersion(), Flags: sets, Values: rendered.Values, WebhookConfiguration: mwc})
	if err != nil {
		return err
	}
	// Written whole under another name and renamed, so that a reader never
	// sees half of it.
	if err := os.WriteFile(*readyFile+".tmp", ready, 0o644); err != nil {
		return err
	}
	if err := os.Rename(*readyFile+".tmp", *readyFile); err != nil {
		return err
	}
	fmt.Printf("serving Istio %s's injector on %s\n", istioVersion(), srv.URL)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case <-sig:
	case err := <-srv.failed:
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Stop(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// istioVersion is the istio.io/istio module version in the build info.
func istioVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range info.Deps {
		if d.Path == "istio.io/istio" {
			if d.Replace != nil {
				return d.Replace.Path + "@" + d.Replace.Version
			}
			return d.Version
		}
	}
	return "unknown"
}
